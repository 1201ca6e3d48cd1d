/* nats_ceiling.c — the JetStream cluster's own ceiling for what `engram mirror` does:
 * asynchronous publishes of SIZE-byte messages with a Nats-Msg-Id and the mirror's nine
 * headers into a stream of R replicas, at most MAX_PENDING awaiting their ack. Prints
 * one JSON line; the stream is deleted after the run, and with COUNT 0 only made (for a
 * mirror run to follow). Usage: nats_ceiling URL STREAM COUNT SIZE REPLICAS MAX_PENDING */
#include <nats/nats.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int failed;
static void on_ack(jsCtx *js, natsMsg *msg, jsPubAck *pa, jsPubAckErr *pae, void *closure) {
  (void)js, (void)closure;
  if (!pa || pae) failed++;
  natsMsg_Destroy(msg);
}

int main(int argc, char **argv) {
  if (argc != 7) {
    fprintf(stderr, "usage: nats_ceiling URL STREAM COUNT SIZE REPLICAS MAX_PENDING\n");
    return 2;
  }
  const char *url = argv[1], *stream = argv[2];
  long count = atol(argv[3]), size = atol(argv[4]), replicas = atol(argv[5]);
  long pending = atol(argv[6]);
  natsOptions *o = NULL;
  natsConnection *nc = NULL;
  jsCtx *js = NULL;
  jsOptions jo;
  jsOptions_Init(&jo);
  jo.PublishAsync.MaxPending = pending;
  jo.PublishAsync.AckHandler = on_ack;
  jo.PublishAsync.StallWait = 60000; /* wait for room under MAX_PENDING, as the mirror does */
  char *servers[8];
  int n = 0;
  char *list = strdup(url);
  for (char *p = strtok(list, ","); p && n < 8; p = strtok(NULL, ",")) servers[n++] = p;
  natsStatus s = natsOptions_Create(&o);
  if (s == NATS_OK) s = natsOptions_SetServers(o, (const char **)servers, n);
  if (s == NATS_OK) s = natsConnection_Connect(&nc, o);
  if (s == NATS_OK) s = natsConnection_JetStream(&js, nc, &jo);
  char subj[128], subjects[128];
  snprintf(subjects, sizeof subjects, "%s.>", stream);
  snprintf(subj, sizeof subj, "%s.ev", stream);
  const char *sl[1] = {subjects};
  jsStreamConfig sc;
  jsStreamConfig_Init(&sc);
  sc.Name = stream;
  sc.Subjects = sl;
  sc.SubjectsLen = 1;
  sc.Storage = js_FileStorage;
  sc.Replicas = replicas;
  sc.Duplicates = 120LL * 1000000000;
  jsErrCode ec = 0;
  for (int tries = 0; s == NATS_OK && tries < 50; tries++) {
    js_DeleteStream(js, stream, NULL, NULL);
    natsStatus as = js_AddStream(NULL, js, &sc, NULL, &ec);
    if (as == NATS_OK) break;
    struct timespec ts = {0, 200000000L};
    nanosleep(&ts, NULL);
  }
  if (s != NATS_OK) {
    fprintf(stderr, "nats_ceiling: %s\n", natsStatus_GetText(s));
    return 1;
  }
  char *payload = malloc(size);
  memset(payload, 'x', size);
  double t0 = now();
  for (long i = 0; i < count && s == NATS_OK; i++) {
    natsMsg *m = NULL;
    char id[64], num[32];
    snprintf(id, sizeof id, "1796464172008018499:ceil:%ld", i + 1);
    snprintf(num, sizeof num, "%ld", i + 1);
    s = natsMsg_Create(&m, subj, NULL, payload, (int)size);
    natsMsgHeader_Set(m, "Engram-Topic", "ceil");
    natsMsgHeader_Set(m, "Engram-Offset", num);
    natsMsgHeader_Set(m, "Engram-Topic-Created", "1796464172008018499");
    natsMsgHeader_Set(m, "Engram-Type", "memory.saved");
    natsMsgHeader_Set(m, "Engram-Timestamp", "1796464172008018499");
    natsMsgHeader_Set(m, "Engram-Key", "m-1234");
    jsPubOptions po;
    jsPubOptions_Init(&po);
    po.MsgId = id;
    po.MaxWait = 5000;
    if (s == NATS_OK) s = js_PublishMsgAsync(js, &m, &po);
    natsMsg_Destroy(m);
  }
  jsPubOptions po;
  jsPubOptions_Init(&po);
  po.MaxWait = 60000;
  if (s == NATS_OK) s = js_PublishAsyncComplete(js, &po);
  double secs = now() - t0;
  printf(
      "{\"what\":\"nats_ceiling\",\"replicas\":%ld,\"count\":%ld,\"size\":%ld,"
      "\"max_pending\":%ld,\"failed\":%d,\"status\":\"%s\",\"secs\":%.3f,\"rate\":%.0f}\n",
      replicas, count, size, pending, failed, natsStatus_GetText(s), secs, count / secs);
  if (count > 0) js_DeleteStream(js, stream, NULL, NULL); /* COUNT 0: only make the stream */
  jsCtx_Destroy(js);
  natsConnection_Destroy(nc);
  natsOptions_Destroy(o);
  free(payload);
  free(list);
  return s == NATS_OK && !failed ? 0 : 1;
}
