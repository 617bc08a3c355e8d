#include <map>
#include <string>

#include "core/murmur3.h"
#include "core/routing_table.h"
#include "route_builder.h"
#include "test_harness.h"

using edgemesh::RoutingTable;
using edgemesh_test::Addr;
using edgemesh_test::BuildTable;
using edgemesh_test::TestRoute;

namespace {
std::shared_ptr<const RoutingTable> Decode(const std::vector<uint8_t>& b, std::string* error) {
  return RoutingTable::Decode(b.data(), b.size(), error);
}
}  // namespace

TEST(murmur3_matches_reference_vectors) {
  CHECK_EQ(edgemesh::Murmur3(std::string_view("")), 0u);
  CHECK_EQ(edgemesh::Murmur3(std::string_view("hello")), 0x248bfa47u);
  CHECK_EQ(edgemesh::Murmur3(std::string_view("The quick brown fox jumps over the lazy dog")), 0x2e4ff723u);
  CHECK_EQ(edgemesh::Murmur3(std::string_view("10.0.0.1:80#3")), 0xa6bc8e6au);
  CHECK_EQ(edgemesh::Murmur3(std::string_view("abc")), 0xb3dd93fau);
}

TEST(routing_table_decodes_and_looks_up_routes) {
  auto b = BuildTable(7, {TestRoute{"10.96.0.10", 80, 0, 0, 0, 3, 0, {{"10.1.0.2", 8080}, {"10.1.0.1", 8080}}},
                          TestRoute{"10.96.0.11", 443, 2, 1, 30, 4, 250, {{"10.1.0.3", 8443}}}});
  std::string error;
  auto t = Decode(b, &error);
  CHECK(t != nullptr);
  CHECK_EQ(t->generation, 7u);
  CHECK_EQ(t->size(), static_cast<size_t>(2));
  const auto* r = t->Lookup(Addr("10.96.0.10"), 80);
  CHECK(r != nullptr);
  CHECK_EQ(r->service_slot, 3u);
  // Endpoints come out in "ip:port" string order whatever the encoder's order.
  CHECK_EQ(edgemesh::EndpointString(r->endpoints[0]), std::string("10.1.0.1:8080"));
  const auto* r2 = t->Lookup(Addr("10.96.0.11"), 443);
  CHECK(r2 != nullptr);
  CHECK(r2->policy == edgemesh::LbPolicy::kSourceIpHash);
  CHECK_EQ(r2->flags, static_cast<uint8_t>(1));
  CHECK_EQ(r2->affinity_timeout_s, 30u);
  CHECK_EQ(r2->connect_timeout_ms, 250u);
  CHECK(t->Lookup(Addr("10.96.0.11"), 80) == nullptr);
  CHECK(t->Lookup(Addr("10.96.0.12"), 443) == nullptr);
}

TEST(routing_table_rejects_malformed_buffers_with_a_reason) {
  std::string error;
  std::vector<uint8_t> tiny{1, 2, 3};
  CHECK(Decode(tiny, &error) == nullptr);
  CHECK(error.find("header") != std::string::npos);
  auto good = BuildTable(1, {TestRoute{"10.96.0.10", 80, 0, 0, 0, 0, 0, {{"10.1.0.1", 80}}}});
  auto bad_magic = good;
  bad_magic[0] ^= 0xff;
  CHECK(Decode(bad_magic, &error) == nullptr);
  CHECK(error.find("magic") != std::string::npos);
  auto truncated = good;
  truncated.resize(truncated.size() - 3);
  CHECK(Decode(truncated, &error) == nullptr);
  CHECK(error.find("truncated") != std::string::npos);
  auto trailing = good;
  trailing.push_back(0);
  CHECK(Decode(trailing, &error) == nullptr);
  auto bad_policy = good;
  bad_policy[16 + 18] = 9;
  CHECK(Decode(bad_policy, &error) == nullptr);
  CHECK(error.find("policy") != std::string::npos);
  auto dup = BuildTable(1, {TestRoute{"10.96.0.10", 80, 0, 0, 0, 0, 0, {}}, TestRoute{"10.96.0.10", 80, 0, 0, 0, 0, 0, {}}});
  CHECK(Decode(dup, &error) == nullptr);
  CHECK(error.find("duplicate") != std::string::npos);
  // A huge endpoint count must not be trusted (no overflow, no giant allocation).
  auto huge = good;
  huge[16 + 32] = 0xff;
  huge[16 + 33] = 0xff;
  huge[16 + 34] = 0xff;
  huge[16 + 35] = 0xff;
  CHECK(Decode(huge, &error) == nullptr);
  // A version-1 (IPv4-only) table is named as such, not misread.
  auto v1 = good;
  v1[0] = 0x45;  // "EMR1"
  v1[1] = 0x4d;
  v1[2] = 0x52;
  v1[3] = 0x31;
  CHECK(Decode(v1, &error) == nullptr);
  CHECK(error.find("old format EMR1") != std::string::npos);
}

TEST(round_robin_cycles_through_every_endpoint) {
  auto b = BuildTable(1, {TestRoute{"10.96.0.10", 80, 0, 0, 0, 0, 0, {{"10.1.0.1", 80}, {"10.1.0.2", 80}, {"10.1.0.3", 80}}}});
  std::string error;
  auto t = Decode(b, &error);
  const auto* r = t->Lookup(Addr("10.96.0.10"), 80);
  std::map<uint32_t, int> hits;
  for (int i = 0; i < 30; ++i) hits[edgemesh::PickEndpoint(*r, Addr("192.168.0.1"), 0)]++;
  CHECK_EQ(hits.size(), static_cast<size_t>(3));
  for (auto& [idx, n] : hits) CHECK_EQ(n, 10);
}

TEST(source_ip_hash_is_stable_and_spreads) {
  TestRoute route{"10.96.0.10", 80, 2, 0, 0, 0, 0, {}};
  for (int i = 1; i <= 4; ++i) route.endpoints.push_back({"10.1.0." + std::to_string(i), 80});
  std::string error;
  auto t = Decode(BuildTable(1, {route}), &error);
  const auto* r = t->Lookup(Addr("10.96.0.10"), 80);
  CHECK_EQ(r->ring.points.size(), static_cast<size_t>(1024));
  std::map<uint32_t, int> hits;
  for (int c = 0; c < 400; ++c) {
    const edgemesh::IpAddr client = Addr("172.16." + std::to_string(c / 250) + "." + std::to_string(c % 250 + 1));
    const uint32_t first = edgemesh::PickEndpoint(*r, client, 12345);
    CHECK_EQ(edgemesh::PickEndpoint(*r, client, 999), first);  // random input is ignored
    hits[first]++;
  }
  CHECK_EQ(hits.size(), static_cast<size_t>(4));
  for (auto& [idx, n] : hits) CHECK(n > 40);
  // Removing one endpoint moves every client that was on it and no other (every endpoint has
  // kRingPointsPerEndpoint points whatever the endpoint count, so the survivors' points stay).
  TestRoute smaller = route;
  smaller.endpoints.pop_back();
  auto t2 = Decode(BuildTable(2, {smaller}), &error);
  const auto* r2 = t2->Lookup(Addr("10.96.0.10"), 80);
  int moved = 0, moved_others = 0;
  for (int c = 0; c < 400; ++c) {
    const edgemesh::IpAddr client = Addr("172.16." + std::to_string(c / 250) + "." + std::to_string(c % 250 + 1));
    auto before = edgemesh::EndpointString(r->endpoints[edgemesh::PickEndpoint(*r, client, 0)]);
    auto after = edgemesh::EndpointString(r2->endpoints[edgemesh::PickEndpoint(*r2, client, 0)]);
    CHECK(after != std::string("10.1.0.4:80"));
    if (before != after) ++(before == "10.1.0.4:80" ? moved : moved_others);
  }
  CHECK(moved > 40);
  CHECK_EQ(moved_others, 0);
}

TEST(ring_pick_wraps_to_the_first_point) {
  std::vector<edgemesh::Endpoint> eps{{Addr("10.0.0.1"), 80}, {Addr("10.0.0.2"), 80}};
  auto ring = edgemesh::BuildRing(eps);
  CHECK_EQ(ring.points.size(), 2 * edgemesh::kRingPointsPerEndpoint);
  const uint32_t first_owner = static_cast<uint32_t>(ring.points.front() & 0xffffffffu);
  CHECK_EQ(ring.Pick(0xffffffffu), (ring.points.back() >> 32) == 0xffffffffu
                                       ? static_cast<uint32_t>(ring.points.back() & 0xffffffffu)
                                       : first_owner);
  CHECK_EQ(ring.Pick(0), first_owner);
}

TEST(routing_table_serves_ipv6_cluster_ips_beside_ipv4_ones) {
  auto b = BuildTable(3, {TestRoute{"fd00::10", 80, 2, 0, 0, 1, 0, {{"fd01::2", 8080}, {"fd01::1", 8080}}},
                          TestRoute{"10.96.0.10", 80, 0, 0, 0, 2, 0, {{"10.1.0.1", 8080}}}});
  std::string error;
  auto t = Decode(b, &error);
  CHECK(t != nullptr);
  const auto* r6 = t->Lookup(Addr("fd00::10"), 80);
  CHECK(r6 != nullptr);
  CHECK_EQ(r6->service_slot, 1u);
  CHECK(!r6->vip.IsV4());
  // Ring order is the "ip:port" string order, IPv6 written without brackets (src/lb/endpoint-key.ts).
  CHECK_EQ(edgemesh::EndpointString(r6->endpoints[0]), std::string("fd01::1:8080"));
  CHECK_EQ(r6->ring.points.size(), static_cast<size_t>(512));
  const uint32_t first = edgemesh::PickEndpoint(*r6, Addr("2001:db8::7"), 1);
  CHECK_EQ(edgemesh::PickEndpoint(*r6, Addr("2001:db8::7"), 2), first);
  // IPv4 is kept IPv4-mapped (what an IPv4 socket maps to); IPv4-compatible ::a.b.c.d is another key.
  CHECK(t->Lookup(Addr("::ffff:10.96.0.10"), 80) != nullptr);  // the same 16 bytes as 10.96.0.10
  CHECK(t->Lookup(Addr("::10.96.0.10"), 80) == nullptr);
  CHECK(t->Lookup(Addr("fd00::10"), 81) == nullptr);
  CHECK(t->Lookup(Addr("fd00::11"), 80) == nullptr);
  CHECK_EQ(Addr("10.96.0.10").ToString(), std::string("10.96.0.10"));
  CHECK_EQ(Addr("FD00:0:0::0010").ToString(), std::string("fd00::10"));
}
