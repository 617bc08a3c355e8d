// Native DNS fast path: the strict query parser (including a fuzz run: random and mutated
// packets never crash it and nothing it accepts breaks the reply writer), the answer table
// decoder (every truncation of a valid table rejected cleanly), and the responder on a real
// UDP socket (answers from the table, NXDOMAIN under the zone, misses handed to the sink).
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <cstring>
#include <mutex>
#include <string>
#include <vector>

#include "dns/dns_responder.h"
#include "dns/dns_table.h"
#include "dns/dns_wire.h"
#include "test_harness.h"

using namespace edgemesh::dns;

namespace {

std::string Wire(const std::string& dotted) {
  std::string out;
  size_t start = 0;
  while (start < dotted.size()) {
    size_t dot = dotted.find('.', start);
    if (dot == std::string::npos) dot = dotted.size();
    out.push_back(static_cast<char>(dot - start));
    out.append(dotted, start, dot - start);
    start = dot + 1;
  }
  out.push_back(0);
  return out;
}

std::vector<uint8_t> Query(const std::string& name, uint16_t qtype, uint16_t id = 0x1234, bool edns = false) {
  std::vector<uint8_t> q = {static_cast<uint8_t>(id >> 8), static_cast<uint8_t>(id), 1, 0, 0, 1, 0, 0, 0, 0, 0,
                            static_cast<uint8_t>(edns ? 1 : 0)};
  std::string w = Wire(name);
  q.insert(q.end(), w.begin(), w.end());
  q.push_back(static_cast<uint8_t>(qtype >> 8));
  q.push_back(static_cast<uint8_t>(qtype));
  q.push_back(0);
  q.push_back(1);
  if (edns) {
    const uint8_t opt[] = {0, 0, 41, 0x10, 0, 0, 0, 0x80, 0, 0, 0};
    q.insert(q.end(), opt, opt + sizeof(opt));
  }
  return q;
}

struct TableBuilder {
  std::vector<uint8_t> b;
  uint32_t names = 0;
  void U8(uint8_t v) { b.push_back(v); }
  void U16(uint16_t v) {
    b.push_back(static_cast<uint8_t>(v));
    b.push_back(static_cast<uint8_t>(v >> 8));
  }
  void U32(uint32_t v) {
    U16(static_cast<uint16_t>(v));
    U16(static_cast<uint16_t>(v >> 16));
  }
  void Bytes(const std::string& s) { b.insert(b.end(), s.begin(), s.end()); }
  TableBuilder(const std::string& zone, const std::string& soa) {
    U32(kTableMagic);
    U32(7);
    U32(0);  // patched by Finish
    U16(static_cast<uint16_t>(Wire(zone).size()));
    U16(static_cast<uint16_t>(soa.size()));
    Bytes(Wire(zone));
    Bytes(soa);
  }
  void Name(const std::string& name, std::vector<std::pair<uint16_t, std::string>> answers, bool soa = false) {
    std::string w = Wire(name);
    U8(static_cast<uint8_t>(w.size()));
    Bytes(w);
    U8(static_cast<uint8_t>(answers.size()));
    for (auto& [qtype, an] : answers) {
      U16(qtype);
      U8(soa ? kAnswerFlagSoa : 0);
      U8(0);
      U16(an.empty() ? 0 : 1);
      U16(static_cast<uint16_t>(an.size()));
      Bytes(an);
    }
    ++names;
  }
  std::vector<uint8_t> Finish() {
    std::vector<uint8_t> out = b;
    for (int i = 0; i < 4; ++i) out[8 + i] = static_cast<uint8_t>(names >> (8 * i));
    return out;
  }
};

// An A record owned by the question (pointer to offset 12), TTL 5, 10.96.0.10.
const std::string kARecord("\xc0\x0c\x00\x01\x00\x01\x00\x00\x00\x05\x00\x04\x0a\x60\x00\x0a", 16);
const std::string kSoa("\x07" "cluster" "\x05" "local" "\x00\x00\x06\x00\x01\x00\x00\x00\x05\x00\x16"
                       "\x00\x00\x00\x00\x00\x00\x00\x01\x00\x00\x1c\x20\x00\x00\x07\x08\x00\x01\x51\x80\x00\x00\x00\x05",
                       15 + 10 + 22);

std::shared_ptr<const AnswerTable> SampleTable() {
  TableBuilder t("cluster.local", kSoa);
  t.Name("web.default.svc.cluster.local", {{1, kARecord}, {28, ""}}, false);
  t.Name("web.default", {{1, kARecord}});
  t.Name("default.svc.cluster.local", {});
  auto bytes = t.Finish();
  std::string error;
  auto table = AnswerTable::Decode(bytes.data(), bytes.size(), &error);
  if (!table) throw edgemesh_test::Failure{"decode: " + error};
  return table;
}

uint32_t Xorshift(uint32_t& x) {
  x ^= x << 13;
  x ^= x >> 17;
  x ^= x << 5;
  return x;
}

}  // namespace

TEST(dns_parse_accepts_simple_queries_and_lowercases) {
  auto q = Query("Web.Default.SVC.cluster.local", 1);
  SimpleQuery p;
  CHECK(ParseSimpleQuery(q.data(), q.size(), &p));
  CHECK_EQ(std::string(reinterpret_cast<char*>(p.name), p.name_len), Wire("web.default.svc.cluster.local"));
  CHECK_EQ(p.qtype, 1);
  CHECK_EQ(p.question_end, q.size());
  CHECK(!p.edns);
  CHECK_EQ(p.udp_limit, 512);
  auto e = Query("web.default", 28, 1, true);
  CHECK(ParseSimpleQuery(e.data(), e.size(), &p));
  CHECK(p.edns);
  CHECK(p.dnssec_ok);
  CHECK_EQ(p.udp_limit, 1232);
}

TEST(dns_parse_leaves_unusual_queries_to_js) {
  SimpleQuery p;
  auto q = Query("web.default", 1);
  auto bad = q;
  bad[2] |= 0x80;  // a response
  CHECK(!ParseSimpleQuery(bad.data(), bad.size(), &p));
  bad = q;
  bad[2] |= 4 << 3;  // opcode 4
  CHECK(!ParseSimpleQuery(bad.data(), bad.size(), &p));
  bad = q;
  bad[5] = 2;  // qdcount 2
  CHECK(!ParseSimpleQuery(bad.data(), bad.size(), &p));
  bad = q;
  bad[bad.size() - 1] = 3;  // class CH
  CHECK(!ParseSimpleQuery(bad.data(), bad.size(), &p));
  bad = q;
  bad[12] = 0xc0;  // compression in the question
  CHECK(!ParseSimpleQuery(bad.data(), bad.size(), &p));
  auto dotted = Query("a.b", 1);
  dotted[14] = '.';  // a '.' inside a label
  CHECK(!ParseSimpleQuery(dotted.data(), dotted.size(), &p));
  auto v1 = Query("web.default", 1, 1, true);
  v1[v1.size() - 5] = 1;  // EDNS version 1: BADVERS is the JS server's
  CHECK(!ParseSimpleQuery(v1.data(), v1.size(), &p));
  for (size_t cut = 0; cut < q.size(); ++cut) CHECK(!ParseSimpleQuery(q.data(), cut, &p));
}

TEST(dns_write_reply_respects_udp_limit_and_copies_question) {
  auto q = Query("WEB.default", 1, 0xbeef);
  SimpleQuery p;
  CHECK(ParseSimpleQuery(q.data(), q.size(), &p));
  uint8_t out[1500];
  size_t n = WriteReply(p, q.data(), 0, 1, reinterpret_cast<const uint8_t*>(kARecord.data()), kARecord.size(), 0,
                        nullptr, 0, out, sizeof(out));
  CHECK_EQ(n, q.size() + kARecord.size());
  CHECK_EQ(out[0], 0xbe);
  CHECK_EQ(out[2], 0x85);  // QR AA RD
  CHECK_EQ(out[3], 0x80);  // RA, NOERROR
  CHECK(std::memcmp(out + 12, q.data() + 12, q.size() - 12) == 0);
  std::string big(600, 'x');
  CHECK_EQ(WriteReply(p, q.data(), 0, 1, reinterpret_cast<const uint8_t*>(big.data()), big.size(), 0, nullptr, 0, out,
                      sizeof(out)),
           0u);
}

TEST(dns_parse_fuzz_never_reads_out_of_bounds) {
  // Packets are copied into exactly-sized heap buffers so an overread would hit the allocator's
  // guard under sanitizers; without them the invariants below still have to hold.
  uint32_t seed = 0x9e3779b9u;
  const std::vector<std::vector<uint8_t>> seeds = {Query("web.default.svc.cluster.local", 1),
                                                   Query("web.default", 28, 7, true),
                                                   Query("_http._tcp.web.default.svc.cluster.local", 33)};
  auto table = SampleTable();
  uint8_t out[kEdnsUdpLimit];
  int accepted = 0;
  for (int i = 0; i < 200000; ++i) {
    std::vector<uint8_t> pkt;
    if (Xorshift(seed) % 4 == 0) {
      pkt.resize(Xorshift(seed) % 80);
      for (auto& b : pkt) b = static_cast<uint8_t>(Xorshift(seed));
    } else {
      pkt = seeds[Xorshift(seed) % seeds.size()];
      int rounds = 1 + Xorshift(seed) % 4;
      for (int r = 0; r < rounds; ++r) {
        uint32_t op = Xorshift(seed) % 5;
        if (pkt.empty()) break;
        size_t at = Xorshift(seed) % pkt.size();
        if (op == 0) pkt[at] ^= static_cast<uint8_t>(1u << (Xorshift(seed) % 8));
        if (op == 1) pkt.resize(at);
        if (op == 2) pkt.insert(pkt.begin() + at, static_cast<uint8_t>(Xorshift(seed)));
        if (op == 3) pkt[at] = static_cast<uint8_t>(Xorshift(seed));
        if (op == 4) pkt.push_back(static_cast<uint8_t>(Xorshift(seed)));
      }
    }
    std::unique_ptr<uint8_t[]> exact(new uint8_t[pkt.size() + 1]);
    if (!pkt.empty()) std::memcpy(exact.get(), pkt.data(), pkt.size());
    SimpleQuery p;
    if (!ParseSimpleQuery(exact.get(), pkt.size(), &p)) continue;
    ++accepted;
    CHECK(p.question_end <= pkt.size());
    CHECK(p.name_len >= 1 && p.name_len <= kMaxNameWire);
    CHECK(ValidWireName(p.name, p.name_len));
    const TableAnswer* ans = nullptr;
    Verdict v = table->Lookup(p.name, p.name_len, p.qtype, &ans);
    if (v == Verdict::kAnswer) {
      size_t n = WriteReply(p, exact.get(), 0, ans->ancount, reinterpret_cast<const uint8_t*>(ans->an.data()),
                            ans->an.size(), 0, nullptr, 0, out, sizeof(out));
      CHECK(n == 0 || (n >= p.question_end && n <= p.udp_limit));
    }
  }
  CHECK(accepted > 1000);
}

TEST(dns_table_rejects_every_truncation_and_garbage) {
  TableBuilder t("cluster.local", kSoa);
  t.Name("web.default.svc.cluster.local", {{1, kARecord}});
  auto bytes = t.Finish();
  std::string error;
  CHECK(AnswerTable::Decode(bytes.data(), bytes.size(), &error) != nullptr);
  for (size_t cut = 0; cut < bytes.size(); ++cut) CHECK(AnswerTable::Decode(bytes.data(), cut, &error) == nullptr);
  auto extra = bytes;
  extra.push_back(0);
  CHECK(AnswerTable::Decode(extra.data(), extra.size(), &error) == nullptr);
  auto huge = bytes;
  huge[8] = 0xff;
  huge[9] = 0xff;
  huge[10] = 0xff;
  CHECK(AnswerTable::Decode(huge.data(), huge.size(), &error) == nullptr);
  uint32_t seed = 12345;
  for (int i = 0; i < 20000; ++i) {
    auto m = bytes;
    m[Xorshift(seed) % m.size()] = static_cast<uint8_t>(Xorshift(seed));
    AnswerTable::Decode(m.data(), m.size(), &error);  // must not crash; may or may not decode
  }
}

TEST(dns_table_lookup_answer_nxdomain_punt) {
  auto table = SampleTable();
  const TableAnswer* ans = nullptr;
  auto w = Wire("web.default.svc.cluster.local");
  CHECK(table->Lookup(reinterpret_cast<const uint8_t*>(w.data()), w.size(), 1, &ans) == Verdict::kAnswer);
  CHECK_EQ(ans->ancount, 1);
  // Known name, type not in the table (SRV): the JS server decides.
  CHECK(table->Lookup(reinterpret_cast<const uint8_t*>(w.data()), w.size(), 33, &ans) == Verdict::kPunt);
  auto nx = Wire("nope.default.svc.cluster.local");
  CHECK(table->Lookup(reinterpret_cast<const uint8_t*>(nx.data()), nx.size(), 1, &ans) == Verdict::kNxdomain);
  // A suffix that is not at a label boundary is not the zone.
  auto nz = Wire("xcluster.local");
  CHECK(table->Lookup(reinterpret_cast<const uint8_t*>(nz.data()), nz.size(), 1, &ans) == Verdict::kPunt);
  auto ext = Wire("example.org");
  CHECK(table->Lookup(reinterpret_cast<const uint8_t*>(ext.data()), ext.size(), 1, &ans) == Verdict::kPunt);
}

TEST(dns_table_collapse_uses_the_first_zone_marker) {
  TableBuilder t("cluster.local", kSoa);
  // bit 1: the collapse answer (a CNAME record here stands in for any bytes).
  std::string w = Wire("web.default.svc.cluster.local");
  t.U8(static_cast<uint8_t>(w.size()));
  t.Bytes(w);
  t.U8(2);
  t.U16(1);
  t.U8(0);
  t.U8(0);
  t.U16(1);
  t.U16(static_cast<uint16_t>(kARecord.size()));
  t.Bytes(kARecord);
  t.U16(1);
  t.U8(kAnswerFlagCollapsed);
  t.U8(0);
  t.U16(2);
  t.U16(4);
  t.Bytes("cnam");
  ++t.names;
  auto bytes = t.Finish();
  std::string error;
  auto table = AnswerTable::Decode(bytes.data(), bytes.size(), &error);
  CHECK(table != nullptr);
  const TableAnswer* ans = nullptr;
  auto hit = Wire("web.default.svc.cluster.local.corp.example");
  CHECK(table->Lookup(reinterpret_cast<const uint8_t*>(hit.data()), hit.size(), 1, &ans) == Verdict::kAnswer);
  CHECK(ans->collapsed);
  CHECK_EQ(ans->ancount, 2);
  // The plain name still gets the plain answer; AAAA has no collapse answer: JS decides.
  CHECK(table->Lookup(reinterpret_cast<const uint8_t*>(w.data()), w.size(), 1, &ans) == Verdict::kAnswer);
  CHECK(!ans->collapsed);
  CHECK(table->Lookup(reinterpret_cast<const uint8_t*>(hit.data()), hit.size(), 28, &ans) == Verdict::kPunt);
  // Nothing after the zone, or nothing before `svc`: not a collapse.
  auto bare = Wire("svc.cluster.local.corp");
  CHECK(table->Lookup(reinterpret_cast<const uint8_t*>(bare.data()), bare.size(), 1, &ans) == Verdict::kPunt);
  auto other = Wire("other.default.svc.cluster.local.corp");
  CHECK(table->Lookup(reinterpret_cast<const uint8_t*>(other.data()), other.size(), 1, &ans) == Verdict::kPunt);
}

TEST(dns_responder_answers_on_a_real_socket_and_hands_misses_over) {
  std::mutex mu;
  std::condition_variable cv;
  std::vector<uint8_t> missed;
  uint32_t missed_count = 0;
  Responder r(ResponderOptions{}, [&](std::vector<uint8_t>&& batch, uint32_t count) {
    std::lock_guard<std::mutex> lock(mu);
    missed.insert(missed.end(), batch.begin(), batch.end());
    missed_count += count;
    cv.notify_all();
    return true;
  });
  CHECK(!r.Bind("127.0.0.1", 0, 1 << 20));
  CHECK(r.bound_port() != 0);
  r.SetTable(SampleTable());
  CHECK(!r.Start());
  int c = socket(AF_INET, SOCK_DGRAM, 0);
  sockaddr_in to{};
  to.sin_family = AF_INET;
  to.sin_port = htons(r.bound_port());
  to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  auto exchange = [&](const std::vector<uint8_t>& q) -> std::vector<uint8_t> {
    sendto(c, q.data(), q.size(), 0, reinterpret_cast<sockaddr*>(&to), sizeof(to));
    pollfd pfd{c, POLLIN, 0};
    if (poll(&pfd, 1, 2000) != 1) return {};
    std::vector<uint8_t> buf(2048);
    ssize_t n = recv(c, buf.data(), buf.size(), 0);
    buf.resize(n > 0 ? n : 0);
    return buf;
  };
  auto a = exchange(Query("web.default.svc.cluster.local", 1, 0x4242));
  CHECK_EQ(a.size(), Query("web.default.svc.cluster.local", 1).size() + kARecord.size());
  CHECK_EQ(a[0], 0x42);
  CHECK_EQ(a[3] & 0xf, 0);
  auto nx = exchange(Query("nope.default.svc.cluster.local", 1, 0x4343, true));
  CHECK_EQ(nx[3] & 0xf, 3);
  CHECK_EQ(nx[9], 1);   // SOA in authority
  CHECK_EQ(nx[11], 1);  // our OPT
  CHECK_EQ(r.Counter(kAnswered), 2u);
  CHECK_EQ(r.Answered(1, 1), 1u);
  // A miss: handed to the sink with the client address; a reply through Send reaches the client.
  auto q = Query("example.org", 1, 0x4444);
  sendto(c, q.data(), q.size(), 0, reinterpret_cast<sockaddr*>(&to), sizeof(to));
  {
    std::unique_lock<std::mutex> lock(mu);
    CHECK(cv.wait_for(lock, std::chrono::seconds(2), [&] { return missed_count == 1; }));
  }
  CHECK_EQ(missed.size(), kMissHeaderSize + q.size());
  CHECK_EQ(missed[0], 4);
  CHECK(std::memcmp(missed.data() + kMissHeaderSize, q.data(), q.size()) == 0);
  const uint8_t reply[] = {0x44, 0x44, 0x81, 0x82, 0, 0, 0, 0, 0, 0, 0, 0};
  CHECK(!r.Send(missed.data(), kMissAddrSize, reply, sizeof(reply)));
  pollfd pfd{c, POLLIN, 0};
  CHECK_EQ(poll(&pfd, 1, 2000), 1);
  uint8_t got[64];
  CHECK_EQ(recv(c, got, sizeof(got), 0), static_cast<ssize_t>(sizeof(reply)));
  // The punt is counted right after the sink returns, on the responder thread.
  for (int i = 0; i < 200 && r.Counter(kPunted) == 0; ++i) usleep(5000);
  CHECK_EQ(r.Counter(kPunted), 1u);
  close(c);
  r.Stop();
  r.Stop();  // idempotent
}
