// The lanes backward before and after session 24's changes, on an AVX2 CPU, one thread, alternating calls in one
// process, with the rows kernel as the common reference: this build's backward_lanes16 against d79b1aa's (the
// file of that commit, included in a namespace of its own) and backward_chunk_n16.
//   git show d79b1aa:src/dyvm/kernels/csrc/selective_scan.cpp > /tmp/scan_d79b1aa.cpp
//   g++ -O3 -march=native -mprefer-vector-width=512 -fno-math-errno -fno-trapping-math -fopenmp -std=c++17 \
//       -DSCAN_SOURCE='"'$PWD'/src/dyvm/kernels/csrc/selective_scan.cpp"' -DBEFORE_SOURCE='"/tmp/scan_d79b1aa.cpp"' \
//       docs/speed/2026-12-04-avx2/backward_ab.cpp -o /tmp/backward_ab
//   /tmp/backward_ab REPS ROUNDS B E L
#define DYVM_SCAN_STANDALONE 1
#include SCAN_SOURCE
namespace before {
#include BEFORE_SOURCE
}
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <functional>
#include <random>
#include <string>
#include <vector>
namespace {
struct Data {
  int64_t B, E, L, N = 16;
  std::vector<float> u, d, z, A, BC, D, bias, g;
  Args<float> a;
  Data(int64_t B_, int64_t E_, int64_t L_) : B(B_), E(E_), L(L_) {
    std::mt19937 gen(0);
    std::normal_distribution<float> nd;
    u.resize(B * L * E); d.resize(B * L * E); z.resize(B * L * E); g.resize(B * L * E);
    A.resize(E * N); BC.resize(B * L * 2 * N); D.resize(E); bias.resize(E);
    for (auto& x : u) x = nd(gen);
    for (auto& x : d) x = 0.5f * nd(gen);
    for (auto& x : z) x = nd(gen);
    for (auto& x : g) x = nd(gen);
    for (auto& x : BC) x = nd(gen);
    for (int64_t e = 0; e < E; ++e) for (int n = 0; n < N; ++n) A[e * N + n] = -(n + 1) * std::exp(0.3f * nd(gen));
    for (auto& x : D) x = nd(gen);
    for (auto& x : bias) x = nd(gen);
    a.u = {u.data(), L * E, 1, E}; a.delta = {d.data(), L * E, 1, E}; a.z = {z.data(), L * E, 1, E};
    a.A = A.data(); a.Bm = BC.data(); a.Cm = BC.data() + N; a.sBb = L * 2 * N; a.sBl = 2 * N; a.sCb = L * 2 * N;
    a.sCl = 2 * N; a.D = D.data(); a.bias = bias.data(); a.batch = B; a.E = E; a.L = L; a.N = N;
    a.softplus = true; a.reverse = false;
  }
};

struct Bwd {  // gradient buffers of one call
  std::vector<float> du, dd, dz, dA, dB, dC, dD, db;
  Grads<float> g;
  Bwd(const Data& x) {
    const int64_t n = x.B * x.L * x.E;
    du.assign(n, 0); dd.assign(n, 0); dz.assign(n, 0); dA.assign(x.E * 16, 0);
    dB.assign(x.B * x.L * 16, 0); dC.assign(x.B * x.L * 16, 0); dD.assign(x.E, 0); db.assign(x.E, 0);
    g.du = {du.data(), x.L * x.E, 1, x.E}; g.ddelta = {dd.data(), x.L * x.E, 1, x.E}; g.dz = {dz.data(), x.L * x.E, 1, x.E};
    g.dA = dA.data(); g.dB = dB.data(); g.dC = dC.data(); g.dD = dD.data(); g.dbias = db.data();
  }
  void zero() {
    std::fill(dA.begin(), dA.end(), 0.f); std::fill(dB.begin(), dB.end(), 0.f); std::fill(dC.begin(), dC.end(), 0.f);
    std::fill(dD.begin(), dD.end(), 0.f); std::fill(db.begin(), db.end(), 0.f);
  }
};

double maxdiff(const std::vector<float>& x, const std::vector<float>& y) {
  double m = 0, s = 0;
  for (size_t i = 0; i < x.size(); ++i) { m = std::max(m, (double)std::abs(x[i] - y[i])); s = std::max(s, (double)std::abs(x[i])); }
  if (s == 0) { printf("(all zero) "); return m; }
  return m / s;
}
}  // namespace

int main(int argc, char** argv) {
  const int reps = atoi(argv[1]), rounds = atoi(argv[2]);
  Data x(atoi(argv[3]), atoi(argv[4]), atoi(argv[5]));
  const Args<float>& a = x.a;
  const before::Args<float>& ab = reinterpret_cast<const before::Args<float>&>(a);  // the same struct, another namespace
  Strided<float> go{x.g.data(), x.L * x.E, 1, x.E};
  const std::vector<std::string> names = {"rows_n16", "lanes_d79b1aa", "lanes_now"};
  std::vector<Bwd> grads;
  grads.reserve(3);  // in place: each Grads points into its own vectors
  for (int i = 0; i < 3; ++i) grads.emplace_back(x);
  std::vector<std::function<void()>> arms = {
      [&] { grads[0].zero(); backward_chunk_n16(a, go, grads[0].g, 0, 0, x.E); },
      [&] {
        grads[1].zero();
        before::backward_lanes16(ab, reinterpret_cast<const before::Strided<float>&>(go),
                                 reinterpret_cast<const before::Grads<float>&>(grads[1].g), 0, 0, x.E);
      },
      [&] { grads[2].zero(); backward_lanes16(a, go, grads[2].g, 0, 0, x.E); }};
  for (auto& f : arms) f();
  for (size_t i = 1; i < arms.size(); ++i)
    printf("%s vs rows: max |diff| / max |grad|: du %.2e dΔ %.2e dz %.2e dA %.2e dB %.2e dC %.2e\n", names[i].c_str(),
           maxdiff(grads[0].du, grads[i].du), maxdiff(grads[0].dd, grads[i].dd), maxdiff(grads[0].dz, grads[i].dz),
           maxdiff(grads[0].dA, grads[i].dA), maxdiff(grads[0].dB, grads[i].dB), maxdiff(grads[0].dC, grads[i].dC));
  const size_t K = arms.size();
  std::vector<std::vector<double>> ratio(K), vs_before;
  std::vector<double> now_over_before, total(K, 0);
  for (int r = 0; r < rounds; ++r) {
    std::vector<double> t(K, 0);
    for (int i = 0; i < reps; ++i)
      for (size_t k = 0; k < K; ++k) {
        const size_t j = (k + r) % K;  // rotate the order each round
        auto t0 = std::chrono::steady_clock::now();
        arms[j]();
        t[j] += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      }
    for (size_t k = 0; k < K; ++k) { ratio[k].push_back(t[k] / t[0]); total[k] += t[k]; }
    now_over_before.push_back(t[2] / t[1]);
  }
  printf("B %ld E %ld L %ld, %d rounds of %d calls; time / rows_n16 per round, median (min-max):\n", (long)x.B,
         (long)x.E, (long)x.L, rounds, reps);
  for (size_t k = 0; k < K; ++k) {
    auto v = ratio[k];
    std::sort(v.begin(), v.end());
    printf("  %-14s %8.3f ms/call  %.3f (%.3f-%.3f)\n", names[k].c_str(), total[k] / rounds / reps * 1e3,
           v[v.size() / 2], v.front(), v.back());
  }
  std::sort(now_over_before.begin(), now_over_before.end());
  printf("  lanes_now / lanes_d79b1aa: %.3f (%.3f-%.3f)\n", now_over_before[rounds / 2], now_over_before.front(),
         now_over_before.back());
}
