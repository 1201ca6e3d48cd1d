/* peer_nats.c — the side-by-side workloads against NATS JetStream (cnats). */
#include <nats/nats.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "peers/driver.h"

static char url[256] = "nats://127.0.0.1:4222";
/* NATS 2.9 acknowledges a publish before its data is fsynced (it syncs every sync_interval,
 * 2 minutes by default): its rows say so whatever the row's durability. */
static char durability_label[64] = "default (no fsync before ack)";

struct peer_conn {
  natsConnection *nc;
  jsCtx *js;
  natsSubscription *sub; /* the consumer's subscription, made on its first consume */
};

static int ok(natsStatus s, jsErrCode jerr, const char *what) {
  if (s == NATS_OK) return 0;
  fprintf(stderr, "nats %s: %s (jetstream error %d) %s\n", what, natsStatus_GetText(s), (int)jerr,
          nats_GetLastError(NULL) ? nats_GetLastError(NULL) : "");
  return -1;
}

static peer_conn *conn_open(void) {
  peer_conn *c = calloc(1, sizeof *c);
  if (!c) return NULL;
  if (ok(natsConnection_ConnectTo(&c->nc, url), 0, "connect") ||
      ok(natsConnection_JetStream(&c->js, c->nc, NULL), 0, "jetstream")) {
    natsConnection_Destroy(c->nc);
    free(c);
    return NULL;
  }
  return c;
}

static void conn_close(peer_conn *c) {
  if (!c) return;
  if (c->sub) natsSubscription_Destroy(c->sub);
  jsCtx_Destroy(c->js);
  natsConnection_Destroy(c->nc);
  free(c);
}

static void subject_of(char *buf, size_t cap, const char *stream) {
  snprintf(buf, cap, "%s.ev", stream);
}

static int setup(peer_conn *c, const char *stream) {
  js_DeleteStream(c->js, stream, NULL, NULL); /* absent is fine */
  char subj[128];
  subject_of(subj, sizeof subj, stream);
  const char *subjects[1] = {subj};
  jsStreamConfig cfg;
  jsStreamConfig_Init(&cfg);
  cfg.Name = stream;
  cfg.Subjects = subjects;
  cfg.SubjectsLen = 1;
  cfg.Storage = js_FileStorage;
  jsStreamInfo *si = NULL;
  jsErrCode jerr = 0;
  int rc = ok(js_AddStream(&si, c->js, &cfg, NULL, &jerr), jerr, "add stream");
  jsStreamInfo_Destroy(si);
  return rc;
}

static int teardown(peer_conn *c, const char *stream) {
  jsErrCode jerr = 0;
  return ok(js_DeleteStream(c->js, stream, NULL, &jerr), jerr, "delete stream");
}

/* A message with the event's type and key as headers, the JSON line as data. */
static natsMsg *message(const char *stream, const bench_event *e, int64_t stamp) {
  char subj[128];
  subject_of(subj, sizeof subj, stream);
  natsMsg *m = NULL;
  if (natsMsg_Create(&m, subj, NULL, e->payload, (int)e->payload_len) != NATS_OK) return NULL;
  natsMsgHeader_Set(m, "Type", e->type);
  natsMsgHeader_Set(m, "Key", e->key);
  if (stamp) {
    char s[32];
    snprintf(s, sizeof s, "%lld", (long long)stamp);
    natsMsgHeader_Set(m, "Sent", s);
  }
  return m;
}

static int append(peer_conn *c, const char *stream, const bench_event *e, int64_t stamp) {
  natsMsg *m = message(stream, e, stamp);
  if (!m) return -1;
  jsPubAck *ack = NULL;
  jsErrCode jerr = 0;
  int rc = ok(js_PublishMsg(&ack, c->js, m, NULL, &jerr), jerr, "publish");
  jsPubAck_Destroy(ack);
  natsMsg_Destroy(m);
  return rc;
}

/* n asynchronous publishes, then a wait for every ack. */
static int append_batch(peer_conn *c, const char *stream, const bench_event *const *e, size_t n) {
  for (size_t i = 0; i < n; i++) {
    natsMsg *m = message(stream, e[i], 0);
    if (!m) return -1;
    natsStatus s = js_PublishMsgAsync(c->js, &m, NULL);
    if (m) natsMsg_Destroy(m); /* still ours only when the call failed */
    if (ok(s, 0, "publish async")) return -1;
  }
  jsPubOptions po;
  jsPubOptions_Init(&po);
  po.MaxWait = 30000;
  return ok(js_PublishAsyncComplete(c->js, &po), 0, "publish async complete");
}

static int group_create(peer_conn *c, const char *stream, const char *group, int blocking) {
  jsConsumerConfig cc;
  jsConsumerConfig_Init(&cc);
  cc.Durable = group;
  cc.AckPolicy = js_AckExplicit;
  cc.DeliverPolicy = blocking ? js_DeliverNew : js_DeliverAll;
  cc.AckWait = (int64_t)60 * 1000000000;
  cc.MaxAckPending = 100000;
  char deliver[160];
  if (blocking) {
    /* A push consumer: the server sends each message as it arrives to a consumer blocked
     * in NextMsg, NATS's low-latency path. The drain uses a pull consumer (Fetch). */
    snprintf(deliver, sizeof deliver, "deliver.%s", stream);
    cc.DeliverSubject = deliver;
  }
  jsConsumerInfo *ci = NULL;
  jsErrCode jerr = 0;
  int rc = ok(js_AddConsumer(&ci, c->js, stream, &cc, NULL, &jerr), jerr, "add consumer");
  jsConsumerInfo_Destroy(ci);
  return rc;
}

static void stamp_of(natsMsg *m, int64_t *stamp) {
  const char *v = NULL;
  *stamp = natsMsgHeader_Get(m, "Sent", &v) == NATS_OK && v ? strtoll(v, NULL, 10) : 0;
}

static int consume(peer_conn *c, const char *stream, const char *group, const char *consumer,
                   size_t max, int wait_ms, size_t *n, int64_t *stamps) {
  *n = 0;
  char subj[128];
  subject_of(subj, sizeof subj, stream);
  jsErrCode jerr = 0;
  if (!c->sub) {
    jsSubOptions so;
    jsSubOptions_Init(&so);
    so.Stream = stream;
    so.Consumer = group;
    so.ManualAck = true;
    natsStatus s = wait_ms > 0 ? js_SubscribeSync(&c->sub, c->js, subj, NULL, &so, &jerr)
                               : js_PullSubscribe(&c->sub, c->js, subj, group, NULL, &so, &jerr);
    if (ok(s, jerr, "subscribe")) return -1;
  }
  if (wait_ms > 0) {
    natsMsg *m = NULL;
    natsStatus s = natsSubscription_NextMsg(&m, c->sub, wait_ms);
    if (s == NATS_TIMEOUT) return 0;
    if (ok(s, 0, "next message")) return -1;
    stamp_of(m, &stamps[0]);
    s = natsMsg_Ack(m, NULL);
    natsMsg_Destroy(m);
    if (ok(s, 0, "ack")) return -1;
    *n = 1;
    return 0;
  }
  /* Fetch waits for a full batch or its timeout; when the stream runs dry the server says
   * so and the call returns early, so this timeout bounds only the very end. */
  natsMsgList list = {0};
  natsStatus s = natsSubscription_Fetch(&list, c->sub, (int)max, 500, &jerr);
  if (s == NATS_TIMEOUT || (s == NATS_NOT_FOUND && list.Count == 0)) return 0;
  if (ok(s, jerr, "fetch")) return -1;
  int rc = 0;
  for (int i = 0; i < list.Count; i++) {
    stamp_of(list.Msgs[i], &stamps[i]);
    /* natsMsg_Ack sends the ack without waiting for the server to confirm it: the
     * ordinary way to ack with NATS. */
    if (natsMsg_Ack(list.Msgs[i], NULL) != NATS_OK) rc = -1;
  }
  *n = (size_t)list.Count;
  natsMsgList_Destroy(&list);
  return rc;
}

static int option(int argc, char **argv, int i) {
  if (i + 1 >= argc) return 0;
  if (!strcmp(argv[i], "--url")) {
    snprintf(url, sizeof url, "%s", argv[i + 1]);
  } else if (!strcmp(argv[i], "--durability")) {
    snprintf(durability_label, sizeof durability_label, "%s", argv[i + 1]);
  } else {
    return 0;
  }
  return 2;
}

int main(int argc, char **argv) {
  static peer_sys sys = {
      .name = "nats",
      .durability = durability_label,
      .connect = conn_open,
      .close = conn_close,
      .setup = setup,
      .teardown = teardown,
      .append = append,
      .append_batch = append_batch,
      .group_create = group_create,
      .consume = consume,
      .option = option,
      .usage =
          "  --url URL           the NATS server (default nats://127.0.0.1:4222)\n"
          "  --durability TEXT   label for the table\n",
  };
  int rc = peer_main(&sys, argc, argv);
  nats_Close();
  return rc;
}
