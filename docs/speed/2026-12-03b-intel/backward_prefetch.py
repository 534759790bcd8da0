"""Writes bwvariants.inc for docs/speed/2026-12-02c-intel/backward_variants_ab.cpp: backward_lanes16 of the given
source with, before its reverse pass (pass 2), software prefetches of the next unit's input rows (Δ, u, grad_out, z at
the next block of 16 channels, or the next image): v1 with the L2 hint, v2 with the L1 hint. Not kept (measured.txt 9).
  python backward_prefetch.py src/dyvm/kernels/csrc/selective_scan.cpp > bwvariants.inc
  g++ -O3 -march=native -mprefer-vector-width=512 -fno-math-errno -fno-trapping-math -fopenmp -std=c++17 -I. \
      -DSCAN_SOURCE='"src/dyvm/kernels/csrc/selective_scan.cpp"' docs/speed/2026-12-02c-intel/backward_variants_ab.cpp -o /tmp/bwd_pf
  /tmp/bwd_pf 31 50; /tmp/bwd_pf 31 197 1 384"""
import sys

src = open(sys.argv[1]).read()
i = src.index("void backward_lanes16(const Args<float>& a")
body = src[i:src.index("#endif  // DYVM_HAVE_N16", i)].rstrip()
anchor = "      // pass 2 (reverse scan order), the 16 states in two halves of 8 independent recurrences\n"
assert anchor in body


def variant(name: str, hint: str) -> str:
    rows = "".join(f"            _mm_prefetch(reinterpret_cast<const char*>({p} + nb * {s}.sb + ne + t * {s}.sl), {hint});\n"
                   for p, s in (("a.delta.p", "a.delta"), ("a.u.p", "a.u"), ("gout.p", "gout")))
    prefetch = ("      {  // the next unit's input rows, while pass 2 computes\n"
                "        const int64_t nb = k + 1 < nblk ? b : b + 1, ne = k + 1 < nblk ? d0 + 16 * (k + 1) : d0;\n"
                "        if (nb < Bsz)\n"
                "          for (int64_t t = 0; t < L; ++t) {\n" + rows +
                f"            if (a.z.p) _mm_prefetch(reinterpret_cast<const char*>(a.z.p + nb * a.z.sb + ne + t * a.z.sl), {hint});\n"
                "          }\n      }\n")
    return body.replace("void backward_lanes16(", f"void {name}(").replace(anchor, prefetch + anchor)


print(variant("backward_lanes16_v1", "_MM_HINT_T1") + "\n\n" + variant("backward_lanes16_v2", "_MM_HINT_T0"))
