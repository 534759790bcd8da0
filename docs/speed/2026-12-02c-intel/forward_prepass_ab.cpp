// Forward scan kernel: forward_lanes16 as it was (Δ's softplus and the gate computed inside each time step, through
// map16) against a copy with both as vector loops over the whole (L, 16) sequence before and after the recurrence
// (what commit f7912eb made of forward_lanes16), timed alternately in one process; the demo's training shape
// (B 128, E 128, L 50) and Vim-T's batch-1 shape (B 1, E 384, L 197), one thread.
// Build against the kernel before the change and run (what forward_prepass_ab.txt shows):
//   git show 8d1cf19:src/dyvm/kernels/csrc/selective_scan.cpp > /tmp/scan_8d1cf19.cpp
//   g++ -O3 -march=native -fno-math-errno -fno-trapping-math -fopenmp -std=c++17 \
//       -DSCAN_SOURCE='"/tmp/scan_8d1cf19.cpp"' forward_prepass_ab.cpp -o /tmp/fwd_ab
//   /tmp/fwd_ab 40 1 1 50            # reps, softplus, gate, L [, B, E]
//   /tmp/fwd_ab 40 1 1 197 1 384
#define DYVM_SCAN_STANDALONE 1
#include SCAN_SOURCE
#include <chrono>
#include <cstdio>
#include <random>
#include <vector>
namespace {
void forward_lanes16_v2(const Args<float>& a, const StridedOut<float>& out, int64_t k0, int64_t k1) {
  const int64_t L = a.L, nblk = a.E / 16;
  alignas(64) float At2[256];
  Scratch<float> sc(3 * 16 * L);
  float* __restrict__ DT = sc.base;
  float* __restrict__ DTU = DT + 16 * L;
  float* __restrict__ Y = DTU + 16 * L;
  for (int64_t k = k0; k < k1; ++k) {
    const int64_t b = k / nblk, e0 = (k % nblk) * 16;
    lanes_A(a.A, e0, At2, nullptr);
    const v16f bias = a.bias ? load16(a.bias + e0) : v16f{};
    const v16f Dv = a.D ? load16(a.D + e0) : v16f{};
    const float* up = a.u.p + b * a.u.sb + e0;
    const float* dp = a.delta.p + b * a.delta.sb + e0;
    const float* zp = a.z.p ? a.z.p + b * a.z.sb + e0 : nullptr;
    float* op = out.p + b * out.sb + e0;
    const float* Bb = a.Bm + b * a.sBb;
    const float* Cb = a.Cm + b * a.sCb;
    for (int64_t s = 0; s < L; ++s) {  // scan order
      const int64_t t = a.reverse ? L - 1 - s : s;
      store16(DT + 16 * s, load16(dp + t * a.delta.sl) + bias);
      store16(DTU + 16 * s, load16(up + t * a.u.sl));
    }
    if (a.softplus) {
#pragma omp simd
      for (int64_t i = 0; i < 16 * L; ++i) { const float d = softplus_f(DT[i]); DT[i] = d; DTU[i] *= d; }
    } else {
#pragma omp simd
      for (int64_t i = 0; i < 16 * L; ++i) DTU[i] *= DT[i];
    }
    v16f h[16] = {};
    for (int64_t s = 0; s < L; ++s) {
      const int64_t t = a.reverse ? L - 1 - s : s;
      const v16f dt = load16(DT + 16 * s);
      const v16f dtu = load16(DTU + 16 * s);
      const float* Bt = Bb + t * a.sBl;
      const float* Ct = Cb + t * a.sCl;
      v16f p[16];
#pragma GCC unroll 16
      for (int n = 0; n < 16; ++n) {
        h[n] = exp2_v16(load16(At2 + 16 * n) * dt) * h[n] + dtu * Bt[n];
        p[n] = h[n] * Ct[n];
      }
      v16f w[8], x[4];
      for (int n = 0; n < 8; ++n) w[n] = p[n] + p[n + 8];
      for (int n = 0; n < 4; ++n) x[n] = w[n] + w[n + 4];
      store16(Y + 16 * s, ((x[0] + x[2]) + (x[1] + x[3])) + Dv * load16(up + t * a.u.sl));
    }
    if (zp) {
      for (int64_t s = 0; s < L; ++s) {  // reuse DT as z
        const int64_t t = a.reverse ? L - 1 - s : s;
        store16(DT + 16 * s, load16(zp + t * a.z.sl));
      }
#pragma omp simd
      for (int64_t i = 0; i < 16 * L; ++i) { const float zv = DT[i]; Y[i] = Y[i] * (zv * sigmoid_f(zv)); }
    }
    for (int64_t s = 0; s < L; ++s) {
      const int64_t t = a.reverse ? L - 1 - s : s;
      store16(op + t * out.sl, load16(Y + 16 * s));
    }
  }
}
}
int main(int argc, char** argv){
  int64_t B=128,E=128,L=atoi(argv[4]),N=16; int reps=atoi(argv[1]); int softplus=atoi(argv[2]); int gate=atoi(argv[3]);
  if(argc>5) B=atoi(argv[5]); if(argc>6) E=atoi(argv[6]);
  std::mt19937 g(0); std::normal_distribution<float> nd;
  std::vector<float> u(B*L*E),d(B*L*E),z(B*L*E),o(B*L*E),o2(B*L*E),A(E*N),BC(B*L*2*N),D(E),bias(E);
  for(auto&x:u)x=nd(g); for(auto&x:d)x=0.5f*nd(g); for(auto&x:z)x=nd(g); for(auto&x:BC)x=nd(g);
  for(auto&x:A)x=-std::abs(nd(g))*2; for(auto&x:D)x=nd(g); for(auto&x:bias)x=nd(g);
  Args<float> a;
  a.u={u.data(),L*E,1,E}; a.delta={d.data(),L*E,1,E}; a.z={gate?z.data():nullptr,L*E,1,E};
  a.A=A.data(); a.Bm=BC.data(); a.Cm=BC.data()+N; a.sBb=L*2*N; a.sBl=2*N; a.sCb=L*2*N; a.sCl=2*N;
  a.D=D.data(); a.bias=bias.data(); a.batch=B; a.E=E; a.L=L; a.N=N; a.softplus=softplus; a.reverse=false;
  StridedOut<float> out{o.data(),L*E,1,E}, out2{o2.data(),L*E,1,E};
  int64_t units=B*(E/16);
  forward_lanes16(a,out,0,units); forward_lanes16_v2(a,out2,0,units);
  double md=0,mx=0; for(size_t i=0;i<o.size();i++){md=std::max(md,(double)std::abs(o[i]-o2[i])); mx=std::max(mx,(double)std::abs(o[i]));} printf("bit-identical: %d maxdiff %g of %g\n", memcmp(o.data(),o2.data(),o.size()*4)==0, md, mx);
  double t1=0,t2=0;
  for(int r=0;r<reps;r++){
    auto t0=std::chrono::steady_clock::now(); forward_lanes16(a,out,0,units);
    auto tm=std::chrono::steady_clock::now(); forward_lanes16_v2(a,out2,0,units);
    auto te=std::chrono::steady_clock::now();
    t1+=std::chrono::duration<double>(tm-t0).count(); t2+=std::chrono::duration<double>(te-tm).count();
  }
  printf("kernel %.3f ms, v2 %.3f ms, ratio v2/kernel %.3f\n", t1/reps*1e3, t2/reps*1e3, t2/t1);
}
