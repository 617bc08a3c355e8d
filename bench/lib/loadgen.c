// edgemesh bench load generator and echo backend: one small C program so the client side of the
// latency, connection-rate and concurrency workloads costs the same (and little) for every
// contender. Compiled on first use by bench/lib/loadgen.ts; prints one JSON object per run.
//
//   loadgen serve PORT                       epoll backend: first byte 'C' = reply 1 byte + close,
//                                            anything else = echo everything back
//   loadgen rr HOST PORT SIZE COUNT          one connection, COUNT request/response round trips
//   loadgen connrate HOST PORT SECONDS THREADS   connect, 1-byte request, wait for close, repeat
//   loadgen concurrent HOST PORT CONNS SECONDS SIZE  open CONNS connections, then round-robin
//                                            request/response on all of them for SECONDS
//                                            (SIZE 0: hold them idle for SECONDS instead)
//   loadgen burst HOST PORT N CONC MAX_MS    N short connections, CONC in flight (epoll): connect,
//                                            'C', read the reply and the server's close; stops at MAX_MS
//   loadgen reset HOST PORT                  read until the connection ends; report EOF or the
//                                            errno (libuv reports a reset that arrives with the
//                                            last data as EOF, so tests of resets use this)
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static double now_us(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

static void die(const char *what) {
  fprintf(stderr, "loadgen: %s: %s\n", what, strerror(errno));
  exit(1);
}

// 2,000 concurrent connections need more than the common 1,024 soft limit.
static void raise_nofile(void) {
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }
}

static struct sockaddr_in addr_of(const char *host, int port) {
  struct sockaddr_in a;
  memset(&a, 0, sizeof a);
  a.sin_family = AF_INET;
  a.sin_port = htons((uint16_t)port);
  if (inet_pton(AF_INET, host, &a.sin_addr) != 1) {
    fprintf(stderr, "loadgen: bad IPv4 address %s\n", host);
    exit(2);
  }
  return a;
}

static int write_all(int fd, const char *buf, size_t n) {
  size_t off = 0;
  while (off < n) {
    ssize_t w = write(fd, buf + off, n - off);
    if (w < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN) {
        // Small echo payloads almost never hit this; wait instead of buffering.
        usleep(50);
        continue;
      }
      return -1;
    }
    off += (size_t)w;
  }
  return 0;
}

static int read_exact(int fd, char *buf, size_t n) {
  size_t off = 0;
  while (off < n) {
    ssize_t r = read(fd, buf + off, n - off);
    if (r < 0) {
      if (errno == EINTR) continue;
      return -1;
    }
    if (r == 0) return -1;
    off += (size_t)r;
  }
  return 0;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static double pct(double *sorted, size_t n, double p) {
  if (n == 0) return 0;
  size_t i = (size_t)(p / 100.0 * (double)(n - 1) + 0.5);
  return sorted[i >= n ? n - 1 : i];
}

// ---- serve ------------------------------------------------------------------------------------
enum { MODE_UNKNOWN = 0, MODE_ECHO = 1 };

static int serve(int port) {
  raise_nofile();
  signal(SIGPIPE, SIG_IGN);
  int ls = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
  if (ls < 0) die("socket");
  int one = 1;
  setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  struct sockaddr_in a = addr_of("0.0.0.0", port);
  if (bind(ls, (struct sockaddr *)&a, sizeof a) < 0) die("bind");
  if (listen(ls, 4096) < 0) die("listen");
  int ep = epoll_create1(0);
  struct epoll_event ev = {.events = EPOLLIN, .data.fd = ls};
  epoll_ctl(ep, EPOLL_CTL_ADD, ls, &ev);
  // Per-fd mode; fds are small integers below the raised limit.
  static unsigned char mode[1 << 20];
  static char buf[65536];
  printf("{\"listening\":%d}\n", port);
  fflush(stdout);
  struct epoll_event evs[256];
  for (;;) {
    int n = epoll_wait(ep, evs, 256, -1);
    if (n < 0) {
      if (errno == EINTR) continue;
      die("epoll_wait");
    }
    for (int i = 0; i < n; i++) {
      int fd = evs[i].data.fd;
      if (fd == ls) {
        for (;;) {
          int c = accept4(ls, NULL, NULL, SOCK_NONBLOCK);
          if (c < 0) break;
          setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
          if (c < (int)sizeof mode) mode[c] = MODE_UNKNOWN;
          struct epoll_event ce = {.events = EPOLLIN, .data.fd = c};
          epoll_ctl(ep, EPOLL_CTL_ADD, c, &ce);
        }
        continue;
      }
      ssize_t r = read(fd, buf, sizeof buf);
      if (r < 0 && (errno == EAGAIN || errno == EINTR)) continue;
      if (r <= 0) {
        close(fd);
        continue;
      }
      if (mode[fd] == MODE_UNKNOWN && buf[0] == 'C') {
        // Connection-rate probe: answer and close first, so TIME_WAIT stays on the server side.
        write_all(fd, "C", 1);
        close(fd);
        continue;
      }
      mode[fd] = MODE_ECHO;
      if (write_all(fd, buf, (size_t)r) < 0) close(fd);
    }
  }
  return 0;
}

// ---- rr ---------------------------------------------------------------------------------------
static int connect_to(struct sockaddr_in *a) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return -1;
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  if (connect(fd, (struct sockaddr *)a, sizeof *a) < 0) {
    close(fd);
    return -1;
  }
  return fd;
}

// This thread's CPU time and run-queue wait so far (ns, /proc/thread-self/schedstat); -1 if unreadable.
static void sched_ns(long long *run, long long *wait) {
  *run = *wait = -1;
  FILE *f = fopen("/proc/thread-self/schedstat", "r");
  if (!f) return;
  if (fscanf(f, "%lld %lld", run, wait) != 2) *run = *wait = -1;
  fclose(f);
}

static int rr(const char *host, int port, int size, int count) {
  struct sockaddr_in a = addr_of(host, port);
  int fd = connect_to(&a);
  if (fd < 0) die("connect");
  char *out = malloc((size_t)size), *in = malloc((size_t)size);
  memset(out, 'E', (size_t)size);
  double *lat = malloc(sizeof(double) * (size_t)count);
  int warmup = count / 10 < 100 ? count / 10 : 100;
  for (int i = 0; i < warmup; i++)
    if (write_all(fd, out, (size_t)size) < 0 || read_exact(fd, in, (size_t)size) < 0) die("warm-up");
  long long run0, wait0, run1, wait1;
  sched_ns(&run0, &wait0);
  double start = now_us();
  for (int i = 0; i < count; i++) {
    double t0 = now_us();
    if (write_all(fd, out, (size_t)size) < 0 || read_exact(fd, in, (size_t)size) < 0) die("round trip");
    lat[i] = now_us() - t0;
  }
  double total = now_us() - start;
  sched_ns(&run1, &wait1);
  close(fd);
  // clientRunUs/clientWaitUs: the client's own CPU time and time runnable but not running during
  // the timed round trips (a slow round trip the client waited out is the client's CPU, not the path).
  printf("{\"count\":%d,\"seconds\":%.6f,\"clientRunUs\":%.1f,\"clientWaitUs\":%.1f,\"samples\":[", count,
         total / 1e6, run0 < 0 ? -1.0 : (double)(run1 - run0) / 1e3, wait0 < 0 ? -1.0 : (double)(wait1 - wait0) / 1e3);
  for (int i = 0; i < count; i++) printf(i ? ",%.1f" : "%.1f", lat[i]);
  printf("]}\n");
  return 0;
}

// ---- connrate ---------------------------------------------------------------------------------
struct conn_thread {
  struct sockaddr_in addr;
  double deadline;
  long ok, errors;
  double *lat;
  long lat_cap, lat_n;
};

static void *conn_worker(void *arg) {
  struct conn_thread *t = arg;
  char c;
  while (now_us() < t->deadline) {
    double t0 = now_us();
    int fd = connect_to(&t->addr);
    if (fd < 0) {
      t->errors++;
      usleep(1000);
      continue;
    }
    int ok = write_all(fd, "C", 1) == 0 && read(fd, &c, 1) == 1;
    close(fd);
    if (!ok) {
      t->errors++;
      continue;
    }
    t->ok++;
    if (t->lat_n < t->lat_cap) t->lat[t->lat_n++] = now_us() - t0;
  }
  return NULL;
}

static int connrate(const char *host, int port, double seconds, int threads) {
  struct conn_thread *ts = calloc((size_t)threads, sizeof *ts);
  pthread_t *th = calloc((size_t)threads, sizeof *th);
  double start = now_us();
  for (int i = 0; i < threads; i++) {
    ts[i].addr = addr_of(host, port);
    ts[i].deadline = start + seconds * 1e6;
    ts[i].lat_cap = 200000;
    ts[i].lat = malloc(sizeof(double) * (size_t)ts[i].lat_cap);
    pthread_create(&th[i], NULL, conn_worker, &ts[i]);
  }
  long ok = 0, errors = 0, n = 0;
  for (int i = 0; i < threads; i++) {
    pthread_join(th[i], NULL);
    ok += ts[i].ok;
    errors += ts[i].errors;
    n += ts[i].lat_n;
  }
  double elapsed = (now_us() - start) / 1e6;
  double *all = malloc(sizeof(double) * (size_t)(n ? n : 1));
  long k = 0;
  for (int i = 0; i < threads; i++)
    for (long j = 0; j < ts[i].lat_n; j++) all[k++] = ts[i].lat[j];
  qsort(all, (size_t)n, sizeof(double), cmp_double);
  printf("{\"connections\":%ld,\"errors\":%ld,\"seconds\":%.6f,\"perSecond\":%.1f,\"p50\":%.1f,\"p99\":%.1f}\n",
         ok, errors, elapsed, ok / elapsed, pct(all, (size_t)n, 50), pct(all, (size_t)n, 99));
  return 0;
}

// ---- concurrent -------------------------------------------------------------------------------
struct cconn {
  int fd;
  int connected; // 1 once the non-blocking connect completed
  int got;       // bytes of the current response received
  double sent;   // when the current request was written
};

static int concurrent(const char *host, int port, int conns, double seconds, int size) {
  raise_nofile();
  signal(SIGPIPE, SIG_IGN);
  struct sockaddr_in a = addr_of(host, port);
  struct cconn *cs = calloc((size_t)conns, sizeof *cs);
  char *out = malloc((size_t)size), *in = malloc(65536);
  memset(out, 'E', (size_t)size);
  int ep = epoll_create1(0);
  int one = 1;
  // Phase 1: open every connection (non-blocking, in batches so the listen backlog never
  // overflows and a SYN retry does not add a second to the connect time).
  double t0 = now_us();
  int established = 0, failed = 0;
  const int batch = 256;
  for (int base = 0; base < conns; base += batch) {
    int end = base + batch < conns ? base + batch : conns;
    int pending = 0;
    for (int i = base; i < end; i++) {
      int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
      if (fd < 0) {
        cs[i].fd = -1;
        failed++;
        continue;
      }
      setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
      cs[i].fd = fd;
      if (connect(fd, (struct sockaddr *)&a, sizeof a) < 0 && errno != EINPROGRESS) {
        close(fd);
        cs[i].fd = -1;
        failed++;
        continue;
      }
      struct epoll_event ev = {.events = EPOLLOUT, .data.u32 = (uint32_t)i};
      epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
      pending++;
    }
    struct epoll_event evs[256];
    double deadline = now_us() + 10e6;
    while (pending > 0 && now_us() < deadline) {
      int n = epoll_wait(ep, evs, 256, 100);
      for (int k = 0; k < n; k++) {
        struct cconn *c = &cs[evs[k].data.u32];
        int err = 0;
        socklen_t len = sizeof err;
        getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
        if (err) {
          epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
          close(c->fd);
          c->fd = -1;
          failed++;
        } else {
          struct epoll_event ev = {.events = EPOLLIN, .data.u32 = evs[k].data.u32};
          epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
          c->connected = 1;
          established++;
        }
        pending--;
      }
    }
    failed += pending;
    for (int i = base; i < end; i++)
      if (cs[i].fd >= 0 && !cs[i].connected) {
        close(cs[i].fd);
        cs[i].fd = -1;
      }
  }
  double connect_ms = (now_us() - t0) / 1e3;
  if (size == 0) {
    // Idle hold (memory per idle connection is measured meanwhile by the caller).
    usleep((useconds_t)(seconds * 1e6));
    printf("{\"established\":%d,\"failed\":%d,\"connectMs\":%.1f,\"requests\":0,\"errors\":0,"
           "\"seconds\":%.6f,\"perSecond\":0,\"p50\":0,\"p99\":0}\n",
           established, failed, connect_ms, seconds);
    for (int i = 0; i < conns; i++)
      if (cs[i].fd >= 0) close(cs[i].fd);
    return 0;
  }
  // Phase 2: every connection keeps one request in flight.
  long lat_cap = 2000000, lat_n = 0, done = 0, errors = 0;
  double *lat = malloc(sizeof(double) * (size_t)lat_cap);
  double start = now_us();
  for (int i = 0; i < conns; i++) {
    if (cs[i].fd < 0) continue;
    cs[i].sent = now_us();
    if (write_all(cs[i].fd, out, (size_t)size) < 0) errors++;
  }
  double end = start + seconds * 1e6;
  struct epoll_event evs[256];
  while (now_us() < end) {
    int n = epoll_wait(ep, evs, 256, 50);
    for (int k = 0; k < n; k++) {
      struct cconn *c = &cs[evs[k].data.u32];
      if (c->fd < 0) continue;
      ssize_t r = read(c->fd, in, 65536);
      if (r <= 0) {
        if (r < 0 && errno == EAGAIN) continue;
        epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
        close(c->fd);
        c->fd = -1;
        errors++;
        continue;
      }
      c->got += (int)r;
      if (c->got >= size) {
        double t = now_us();
        if (lat_n < lat_cap) lat[lat_n++] = t - c->sent;
        done++;
        c->got = 0;
        c->sent = t;
        if (write_all(c->fd, out, (size_t)size) < 0) errors++;
      }
    }
  }
  double elapsed = (now_us() - start) / 1e6;
  qsort(lat, (size_t)lat_n, sizeof(double), cmp_double);
  printf("{\"established\":%d,\"failed\":%d,\"connectMs\":%.1f,\"requests\":%ld,\"errors\":%ld,"
         "\"seconds\":%.6f,\"perSecond\":%.1f,\"p50\":%.1f,\"p99\":%.1f}\n",
         established, failed, connect_ms, done, errors, elapsed, done / elapsed, pct(lat, (size_t)lat_n, 50),
         pct(lat, (size_t)lat_n, 99));
  for (int i = 0; i < conns; i++)
    if (cs[i].fd >= 0) close(cs[i].fd);
  return 0;
}

// ---- burst ------------------------------------------------------------------------------------
// Each slot: connecting -> 'C' sent -> reply read -> EOF read (the server closes first, so neither
// TIME_WAIT nor an ephemeral port stays with this client) -> next connection.
struct burst {
  struct sockaddr_in addr;
  int ep;
  int *fds;
  int *state;  // 0 connecting, 1 request sent, 2 reply read
  long total, started, done, failed;
  double deadline;
  int open;
};

// Opens the next connection in slot i, or leaves it empty when all are started or time is up.
static void burst_next(struct burst *b, int i) {
  b->fds[i] = -1;
  while (b->started < b->total && now_us() < b->deadline) {
    b->started++;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    if (fd >= 0 && (connect(fd, (struct sockaddr *)&b->addr, sizeof b->addr) == 0 || errno == EINPROGRESS)) {
      b->state[i] = 0;
      b->fds[i] = fd;
      struct epoll_event ev = {.events = EPOLLOUT | EPOLLIN, .data.u32 = (uint32_t)i};
      epoll_ctl(b->ep, EPOLL_CTL_ADD, fd, &ev);
      b->open++;
      return;
    }
    if (fd >= 0) close(fd);
    b->failed++;
  }
}

static int burst(const char *host, int port, long total, int conc, double max_ms) {
  raise_nofile();
  signal(SIGPIPE, SIG_IGN);
  struct burst b = {.addr = addr_of(host, port), .ep = epoll_create1(0), .total = total};
  b.fds = malloc(sizeof(int) * (size_t)conc);
  b.state = calloc((size_t)conc, sizeof(int));
  double t0 = now_us();
  b.deadline = t0 + max_ms * 1e3;
  for (int i = 0; i < conc; i++) burst_next(&b, i);
  struct epoll_event evs[256];
  char buf[64];
  while (b.open > 0 && now_us() < b.deadline + 10e6) {  // stragglers past that count as failed
    int n = epoll_wait(b.ep, evs, 256, 100);
    for (int k = 0; k < n; k++) {
      int i = (int)evs[k].data.u32;
      int fd = b.fds[i];
      if (fd < 0) continue;
      int finished = 0, ok = 0;
      if (b.state[i] == 0 && (evs[k].events & EPOLLOUT)) {
        int err = 0;
        socklen_t len = sizeof err;
        getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
        if (err || write(fd, "C", 1) != 1) {
          finished = 1;
        } else {
          b.state[i] = 1;
          struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)i};
          epoll_ctl(b.ep, EPOLL_CTL_MOD, fd, &ev);
        }
      } else if (b.state[i] == 0 && (evs[k].events & (EPOLLHUP | EPOLLERR))) {
        finished = 1;
      }
      if (!finished && b.state[i] >= 1) {
        for (;;) {
          ssize_t r = read(fd, buf, sizeof buf);
          if (r > 0) {
            b.state[i] = 2;
            continue;
          }
          if (r < 0 && errno == EINTR) continue;
          if (r < 0 && errno == EAGAIN) break;
          finished = 1;
          ok = r == 0 && b.state[i] == 2;
          break;
        }
      }
      if (!finished) continue;
      close(fd);
      b.open--;
      if (ok)
        b.done++;
      else
        b.failed++;
      burst_next(&b, i);
    }
  }
  for (int i = 0; i < conc; i++)
    if (b.fds[i] >= 0) {
      close(b.fds[i]);
      b.failed++;
    }
  printf("{\"done\":%ld,\"failed\":%ld,\"ms\":%.1f}\n", b.done, b.failed, (now_us() - t0) / 1e3);
  return 0;
}

// ---- reset ------------------------------------------------------------------------------------
static int reset_probe(const char *host, int port) {
  struct sockaddr_in a = addr_of(host, port);
  int fd = connect_to(&a);
  if (fd < 0) die("connect");
  static char buf[65536];
  long bytes = 0;
  const char *code = "EOF";
  for (;;) {
    ssize_t r = read(fd, buf, sizeof buf);
    if (r > 0) {
      bytes += r;
      continue;
    }
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) code = errno == ECONNRESET ? "ECONNRESET" : strerror(errno);
    break;
  }
  close(fd);
  printf("{\"code\":\"%s\",\"bytes\":%ld}\n", code, bytes);
  return 0;
}

int main(int argc, char **argv) {
  if (argc >= 3 && strcmp(argv[1], "serve") == 0) return serve(atoi(argv[2]));
  if (argc >= 6 && strcmp(argv[1], "rr") == 0) return rr(argv[2], atoi(argv[3]), atoi(argv[4]), atoi(argv[5]));
  if (argc >= 6 && strcmp(argv[1], "connrate") == 0)
    return connrate(argv[2], atoi(argv[3]), atof(argv[4]), atoi(argv[5]));
  if (argc >= 7 && strcmp(argv[1], "concurrent") == 0)
    return concurrent(argv[2], atoi(argv[3]), atoi(argv[4]), atof(argv[5]), atoi(argv[6]));
  if (argc >= 7 && strcmp(argv[1], "burst") == 0)
    return burst(argv[2], atoi(argv[3]), atol(argv[4]), atoi(argv[5]), atof(argv[6]));
  if (argc >= 4 && strcmp(argv[1], "reset") == 0) return reset_probe(argv[2], atoi(argv[3]));
  fprintf(stderr,
          "Usage: loadgen serve PORT | rr HOST PORT SIZE COUNT | connrate HOST PORT SECONDS THREADS |"
          " concurrent HOST PORT CONNS SECONDS SIZE | burst HOST PORT N CONC MAX_MS | reset HOST PORT\n");
  return 2;
}
