// forward_lanes16 / backward_lanes16 with the AVX2 exp2 polynomial by Horner (this build) against Estrin's scheme
// (/tmp/scan_estrin.cpp), one thread, alternating calls in one process.
#define DYVM_SCAN_STANDALONE 1
#include SCAN_SOURCE
namespace estrin {
#include OTHER_SOURCE
}
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <functional>
#include <random>
#include <string>
#include <vector>
namespace {
template <typename ArgsT>
struct Data {
  int64_t B, E, L, N = 16;
  std::vector<float> u, d, z, A, BC, D, bias, g;
  ArgsT a;
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
template <typename GradsT>
struct Bwd {
  std::vector<float> du, dd, dz, dA, dB, dC, dD, db;
  GradsT g;
  Bwd(int64_t B, int64_t E, int64_t L) {
    const int64_t n = B * L * E;
    du.assign(n, 0); dd.assign(n, 0); dz.assign(n, 0); dA.assign(E * 16, 0);
    dB.assign(B * L * 16, 0); dC.assign(B * L * 16, 0); dD.assign(E, 0); db.assign(E, 0);
    g.du = {du.data(), L * E, 1, E}; g.ddelta = {dd.data(), L * E, 1, E}; g.dz = {dz.data(), L * E, 1, E};
    g.dA = dA.data(); g.dB = dB.data(); g.dC = dC.data(); g.dD = dD.data(); g.dbias = db.data();
  }
  void zero() { std::fill(dB.begin(), dB.end(), 0.f); std::fill(dC.begin(), dC.end(), 0.f); }
};
double rel(const std::vector<float>& x, const std::vector<float>& y) {
  double m = 0, s = 0;
  for (size_t i = 0; i < x.size(); ++i) { m = std::max(m, (double)std::abs(x[i] - y[i])); s = std::max(s, (double)std::abs(x[i])); }
  return s ? m / s : m;
}
}  // namespace
int main(int argc, char** argv) {
  const std::string mode = argv[1];
  const int reps = atoi(argv[2]), rounds = atoi(argv[3]);
  const int64_t B = atoi(argv[4]), E = atoi(argv[5]), L = atoi(argv[6]);
  Data<Args<float>> x(B, E, L);
  Data<estrin::Args<float>> y(B, E, L);
  const int64_t units = B * (E / 16);
  std::vector<float> o0(B * L * E), o1(B * L * E);
  Bwd<Grads<float>> g0(B, E, L);
  Bwd<estrin::Grads<float>> g1(B, E, L);
  Strided<float> go{x.g.data(), L * E, 1, E};
  estrin::Strided<float> go1{y.g.data(), L * E, 1, E};
  std::function<void()> arms[2];
  if (mode == "fwd") {
    arms[0] = [&] { forward_lanes16(x.a, StridedOut<float>{o0.data(), L * E, 1, E}, 0, units); };
    arms[1] = [&] { estrin::forward_lanes16(y.a, estrin::StridedOut<float>{o1.data(), L * E, 1, E}, 0, units); };
  } else {
    arms[0] = [&] { g0.zero(); backward_lanes16(x.a, go, g0.g, 0, 0, E); };
    arms[1] = [&] { g1.zero(); estrin::backward_lanes16(y.a, go1, g1.g, 0, 0, E); };
  }
  arms[0](); arms[1]();
  if (mode == "fwd") printf("estrin vs horner: max|diff|/max|y| %.2e\n", rel(o0, o1));
  else printf("estrin vs horner: du %.2e dd %.2e dA %.2e dB %.2e\n", rel(g0.du, g1.du), rel(g0.dd, g1.dd), rel(g0.dA, g1.dA), rel(g0.dB, g1.dB));
  std::vector<double> ratios, t0s, t1s;
  for (int r = 0; r < rounds; ++r) {
    double t[2];
    for (int k = 0; k < 2; ++k) {
      const int i = r % 2 ? 1 - k : k;
      auto s = std::chrono::steady_clock::now();
      for (int j = 0; j < reps; ++j) arms[i]();
      t[i] = std::chrono::duration<double>(std::chrono::steady_clock::now() - s).count() / reps;
    }
    ratios.push_back(t[1] / t[0]); t0s.push_back(t[0]); t1s.push_back(t[1]);
  }
  std::sort(ratios.begin(), ratios.end()); std::sort(t0s.begin(), t0s.end()); std::sort(t1s.begin(), t1s.end());
  printf("%s B %ld E %ld L %ld: horner %.3f ms, estrin %.3f ms; estrin/horner median %.3f (min %.3f max %.3f), %d rounds\n",
         mode.c_str(), B, E, L, t0s[rounds / 2] * 1e3, t1s[rounds / 2] * 1e3, ratios[rounds / 2], ratios[0], ratios.back(), rounds);
}
