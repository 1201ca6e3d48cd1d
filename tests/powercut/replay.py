#!/usr/bin/env python3
"""replay.py — the power-cut test: runs a workload under the recording shim, then builds
crash images from its trace and checks each one (ALICE / CrashMonkey style). A workload
of several processes (procs, procs_group) is one trace: the shim orders every process's
records in one total order, so a cut is a power cut of the whole machine.

A crash image is what the disk may hold after a power cut at a point of the trace:
  - file contents: every write a completed flush of its file covers (recorded before that
    flush began), writes through an O_DSYNC descriptor, and any subset of the other
    writes, each kept whole, dropped, or torn (a random subset of its 512-byte sectors);
  - directory entries: directory operations persist in order (ext4's journal); every one
    a completed fsync of its directory covers is there, and any prefix of the rest.
Crash points: after every completed flush and every acknowledgement, and a sample of the
points between; every point between two "mark" acknowledgements of the workload; with
--ack-points, right after every acknowledgement too. At each: the image with every
uncovered write dropped, the one with all of them kept, and random ones (seeded); at an
acknowledgement that --ack-points alone adds, the first only. Each image must open,
verify clean, and hold every operation acknowledged before the cut (pc_work check).

usage: replay.py --build BUILD --scenario S [--mode sync] [--seed N] [--random K]
                 [--between P] [--max-points N] [--ack-points]
                 [--expect-loss [--loss-of TEXT]]
Prints one summary line; exits 0 when the outcome is the expected one.
"""
import argparse
import os
import random
import shutil
import struct
import subprocess
import sys
import tempfile

SECTOR = 512


def parse(path):
    data = open(path, 'rb').read()
    ops, i = [], 0
    while i < len(data):
        t, ino, off, ln = struct.unpack_from('<BQQI', data, i)
        i += 21
        ops.append((chr(t), ino, off, data[i:i + ln]))
        i += ln
    return ops


def parent(p):
    return p.rsplit('/', 1)[0] if '/' in p else '.'


class Replay:
    """Walks the trace once, keeping what every crash image needs."""

    def __init__(self, ops, flush_of=None):
        self.ops = ops
        self.flush_of = flush_of  # last_flush counts flushes of files of this name only
        self.name_of = {}       # fid -> the file's name when created
        self.fid_of = {}        # inode -> file id (inodes are reused; file ids are not)
        self.content = {}       # fid -> [[idx, kind, off, data, durable]]
        self.base = {}          # fid -> (bytearray, ops folded in): the durable prefix
        self.dirops = []        # [(idx, op, args)]
        self.flush_begin = {}   # flush id -> trace index of its B/b
        self.dir_durable = -1   # index of the newest directory op known durable
        self.acks = []          # [(trace index, text)]
        self.last_flush = -1    # trace index of the B of the newest completed data flush
        self.pos = 0
        self.next_fid = 0

    def advance(self, upto):
        """Applies trace records [pos, upto)."""
        while self.pos < upto:
            idx = self.pos
            t, ino, off, data = self.ops[idx]
            self.pos += 1
            if t in 'WDT':
                fid = self.fid_of[ino]
                self.content[fid].append([idx, t, off, data, t == 'D'])
            elif t == 'C':
                fid = self.next_fid
                self.next_fid += 1
                self.fid_of[ino] = fid
                self.content[fid] = []
                self.base[fid] = (bytearray(), 0)
                self.name_of[fid] = os.path.basename(data.decode())
                self.dirops.append((idx, 'C', (data.decode(), fid)))
            elif t in 'MUX':
                self.dirops.append((idx, t, (data.decode(),)))
            elif t == 'R':
                a, b = data.decode().split('\0')
                self.dirops.append((idx, 'R', (a, b)))
            elif t in 'Bb':
                self.flush_begin[off] = idx
            elif t == 'E':
                b = self.flush_begin[off]
                if self.flush_of is None or self.name_of.get(self.fid_of[ino]) == self.flush_of:
                    self.last_flush = max(self.last_flush, b)
                for op in self.content[self.fid_of[ino]]:
                    if op[0] < b:
                        op[4] = True
            elif t == 'e':
                b, d = self.flush_begin[off], data.decode()
                for (i, kind, args) in self.dirops:
                    if i >= b:
                        break
                    # A rename is durable once its new name's directory is flushed.
                    name = args[1] if kind == 'R' else args[0]
                    if parent(name) == d:
                        self.dir_durable = max(self.dir_durable, i)
            elif t == 'A':
                self.acks.append((idx, data.decode()))
            elif t == 'Z':
                raise SystemExit('replay: the workload called msync (MDB_WRITEMAP?): the '
                                 'replay cannot model writes through a mapping')

    def fold(self, fid):
        buf, n = self.base[fid]
        ops = self.content[fid]
        while n < len(ops) and ops[n][4]:
            apply(buf, ops[n], None)
            n += 1
        self.base[fid] = (buf, n)
        return buf, n

    def image_file(self, fid, rng, variant):
        buf, n = self.fold(fid)
        buf = bytearray(buf)
        for op in self.content[fid][n:]:
            if op[4] or variant == 'keep':
                apply(buf, op, None)
            elif variant == 'drop':
                continue
            else:
                r = rng.random()
                if r < 0.45:
                    apply(buf, op, None)
                elif r < 0.75 and op[1] != 'T':
                    apply(buf, op, rng)
        return buf

    def namespace(self, rng, variant):
        ops = self.dirops
        lo = sum(1 for o in ops if o[0] <= self.dir_durable)
        hi = len(ops)
        n = lo if variant == 'drop' else hi if variant == 'keep' else rng.randint(lo, hi)
        ns = {'.': None}
        for (_, kind, args) in ops[:n]:
            if kind == 'M':
                ns[args[0]] = None
            elif kind == 'C':
                ns[args[0]] = args[1]
            elif kind in 'UX':
                ns.pop(args[0], None)
            elif kind == 'R':
                a, b = args
                moved = {}
                for p in list(ns):
                    if p == a or p.startswith(a + '/'):
                        moved[b + p[len(a):]] = ns.pop(p)
                for p in list(ns):
                    if p == b or p.startswith(b + '/'):
                        ns.pop(p)
                ns.update(moved)
        return ns


def apply(buf, op, torn_rng):
    _, kind, off, data, _ = op
    if kind == 'T':
        if off < len(buf):
            del buf[off:]
        else:
            buf.extend(b'\0' * (off - len(buf)))
        return
    pieces = [(off, data)]
    if torn_rng is not None:
        pieces, p = [], off
        while p < off + len(data):
            q = min((p // SECTOR + 1) * SECTOR, off + len(data))
            if torn_rng.random() < 0.5:
                pieces.append((p, data[p - off:q - off]))
            p = q
    for (o, d) in pieces:
        if len(buf) < o + len(d):
            buf.extend(b'\0' * (o + len(d) - len(buf)))
        buf[o:o + len(d)] = d


def write_image(rep, root, rng, variant):
    ns = rep.namespace(rng, variant)
    os.makedirs(root)
    for p in sorted(ns, key=lambda s: s.count('/')):
        if p == '.':
            continue
        full = os.path.join(root, p)
        if not os.path.isdir(os.path.dirname(full)):
            continue  # its directory did not survive
        if ns[p] is None:
            os.mkdir(full)
        else:
            with open(full, 'wb') as f:
                f.write(rep.image_file(ns[p], rng, variant))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--build', default='build')
    ap.add_argument('--scenario', required=True)
    ap.add_argument('--mode', default='sync')
    ap.add_argument('--seed', type=int, default=int(os.environ.get('PC_SEED', '1')))
    ap.add_argument('--random', type=int, default=2, help='random images per crash point')
    ap.add_argument('--between', type=float, default=0.05,
                    help='share of the other trace points also used as crash points')
    ap.add_argument('--max-points', type=int, default=0, help='0 = all')
    ap.add_argument('--ack-points', action='store_true',
                    help='also cut right after every acknowledgement, whatever --max-points '
                         'samples (the image with every uncovered write dropped only): an '
                         'acknowledgement no completed flush covers is then always seen')
    ap.add_argument('--scale', type=int, default=1)
    ap.add_argument('--expect-loss', action='store_true',
                    help='a control: succeed only if some image fails the check')
    ap.add_argument('--loss-of', default='',
                    help='with --expect-loss: only failures whose line holds this text count '
                         '(e.g. "lost: w": an append of a writer process)')
    ap.add_argument('--last-flush', action='store_true',
                    help='check only what was acknowledged before the newest completed '
                         'flush began (the nometasync window: the newest commit may go)')
    ap.add_argument('--last-flush-of', default=None, metavar='NAME',
                    help='with --last-flush: count only flushes of files named NAME (async '
                         'mode: "wal", whose flush is what makes a commit durable; a '
                         "checkpoint's flush of data.mdb after it does not)")
    a = ap.parse_args()
    work = os.path.join(a.build, 'tests/powercut/pc_work')
    shim = os.path.abspath(os.path.join(a.build, 'tests/powercut/shim.so'))
    tmp = tempfile.mkdtemp(prefix='powercut.')
    rng = random.Random(a.seed)
    try:
        root = os.path.join(tmp, 'run')
        os.mkdir(root)
        trace = os.path.join(tmp, 'trace')
        # Under SAN=1 the shim comes before the ASan runtime in the library list.
        env = dict(os.environ, PC_ROOT=root, PC_TRACE=trace, LD_PRELOAD=shim,
                   PC_SCALE=str(a.scale),
                   ASAN_OPTIONS=os.environ.get('ASAN_OPTIONS', 'verify_asan_link_order=0'))
        r = subprocess.run([work, 'run', a.scenario, root, a.mode], env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=300)
        if r.returncode:
            print(r.stdout.decode(errors='replace'))
            raise SystemExit('replay: the workload failed (exit %d)' % r.returncode)
        ops = parse(trace)
        points = set()
        for i, op in enumerate(ops):
            if op[0] in 'EeA' or rng.random() < a.between:
                points.add(i + 1)
        points.add(len(ops))
        # Between a workload's "mark X" acknowledgement and its next "mark", every trace
        # point is a crash point, whatever --max-points samples (e.g. each step of a
        # reclaim's copy and swap).
        forced, inside = set(), False
        for i, op in enumerate(ops):
            if op[0] == 'A' and op[3].startswith(b'mark '):
                inside = not inside
            elif inside:
                forced.add(i + 1)
        points = sorted(points)
        if a.max_points and len(points) > a.max_points:
            points = rng.sample(points, a.max_points)
        full = set(points) | forced
        if a.ack_points:
            points = sorted(full | {i + 1 for i, op in enumerate(ops) if op[0] == 'A'})
        else:
            points = sorted(full)
        rep = Replay(ops, a.last_flush_of)
        jobs, n_img, failures, first, matching = [], 0, 0, [], 0
        checkenv = {k: v for k, v in os.environ.items() if k != 'LD_PRELOAD'}

        def run_checks():
            nonlocal failures, matching
            while jobs:
                args = [work, 'check']
                for (img, acks, _) in jobs:
                    args += [img, acks]
                r = subprocess.run(args, env=checkenv, stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, timeout=600)
                out = r.stdout.decode(errors='replace').splitlines()
                lines = [l for l in out if l.startswith(('ok', 'FAIL'))]
                if len(lines) < len(jobs):
                    if r.returncode == 0:
                        raise SystemExit('replay: checker output unexpected:\n' +
                                         '\n'.join(out[-20:]))
                    # The checker died on the next image (LMDB may crash on a damaged
                    # file): that image fails; the rest go to a new checker.
                    lines.append('FAIL the checker died on it (exit %d)' % r.returncode)
                done, jobs[:] = jobs[:len(lines)], jobs[len(lines):]
                for (img, acks, what), line in zip(done, lines):
                    if line.startswith('FAIL'):
                        failures += 1
                        if a.loss_of in line:
                            matching += 1
                            if len(first) < 5:
                                first.append('%s: %s' % (what, line))
                        elif len(first) < 5 and not a.expect_loss:
                            first.append('%s: %s' % (what, line))
                    shutil.rmtree(os.path.dirname(img), ignore_errors=True)

        checked = 0  # acknowledgements checked, summed over the cuts
        for c in points:
            rep.advance(c)
            variants = ['drop', 'keep'] + ['random'] * a.random if c in full else ['drop']
            acked = [t for (i, t) in rep.acks if not a.last_flush or i < rep.last_flush]
            checked += len(acked)
            for k, v in enumerate(variants):
                d = os.path.join(tmp, 'img%d' % n_img)
                os.mkdir(d)
                img = os.path.join(d, 'root')
                write_image(rep, img, rng, v)
                acks = os.path.join(d, 'acks')
                with open(acks, 'w') as f:
                    f.write(''.join(x + '\n' for x in acked))
                jobs.append((img, acks, 'cut after record %d/%d (%s, %d acks)' % (
                    c, len(ops), v, len(acked))))
                n_img += 1
            if len(jobs) >= 64:
                run_checks()
        run_checks()
        ok = matching > 0 if a.expect_loss else failures == 0
        if rep.acks and not checked:
            print('the trace has acknowledgements but no cut checked any (--last-flush-of '
                  'names a file never flushed?)')
            ok = False
        print('%s %-9s %-10s%s seed %d: %d records, %d crash points, %d images, %d failed%s%s' % (
            'PASS' if ok else 'FAIL', a.scenario, a.mode,
            ' (acks before the last flush%s: %d checked)' % (
                ' of ' + a.last_flush_of if a.last_flush_of else '', checked)
            if a.last_flush else '', a.seed, len(ops), len(points), n_img,
            failures, ' (%d with "%s")' % (matching, a.loss_of) if a.loss_of else '',
            ' (control: a loss was expected and seen)' if ok and a.expect_loss else
            ' (control: no loss seen, the harness is blind)' if a.expect_loss else ''))
        if not a.expect_loss or not ok:
            first = first[:5]
        else:
            first = first[:1]
        if first:
            for f in first:
                print('  ' + f)
        return 0 if ok else 1
    finally:
        if os.environ.get('ENGRAM_KEEP_TMP'):
            print('kept ' + tmp)
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == '__main__':
    sys.exit(main())
