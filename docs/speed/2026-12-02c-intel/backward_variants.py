"""Writes bwvariants.inc for backward_variants_ab.cpp: two variants of backward_lanes16 (named _v1, _v2), cut
out of the scan source given as SCAN_SOURCE (default /tmp/scan_8d1cf19.cpp) and edited. Usage: python
backward_variants.py {tweaks|knockouts} [SCAN_SOURCE]"""
import sys

mode = sys.argv[1]
src = open(sys.argv[2] if len(sys.argv) > 2 else "/tmp/scan_8d1cf19.cpp").read().split("\n")
start = next(i for i, l in enumerate(src) if l.startswith("void backward_lanes16("))
end = next(i for i in range(start, len(src)) if src[i].startswith("#endif  // DYVM_HAVE_N16"))
fn = "\n".join(src[start:end])


def edit(text, old, new):
    assert old in text, old
    return text.replace(old, new)


if mode == "tweaks":
    v1 = fn.replace("void backward_lanes16(", "void backward_lanes16_v1(")
    v1 = edit(v1, "            const v16f x = dh[m] * load16(Es + 256 * s + 16 * n) * load16(Hs + 256 * s + 16 * n);",
              "            const v16f hs = load16(Hs + 256 * (s + 1) + 16 * n);\n"
              "            const v16f x = dh[m] * (hs - dtu * Bt[n]);")
    v1 = edit(v1, "            store16(ac, load16(ac) + load16(Hs + 256 * (s + 1) + 16 * n) * dy);",
              "            store16(ac, load16(ac) + hs * dy);")
    v2 = v1.replace("void backward_lanes16_v1(", "void backward_lanes16_v2(")
    v2 = edit(v2, "            store16(ac, load16(ac) + hs * dy);\n", "")
    v2 = edit(v2, "            float* ac = accC + 256 * t + 16 * n;\n", "")
    v2 = edit(v2, "Scratch<float> sc(hs + es + 2 * acc + 8 * per_s", "Scratch<float> sc(hs + es + 2 * acc + 9 * per_s")
    pre = "      float* __restrict__ Y = S1;  // C_t·h_t + D u_t for the gate (S1 is reset before pass 2)"
    v2 = edit(v2, pre, """      float* __restrict__ GR = dbacc + nblk * 16 + 64;  // raw grad_out (extra scratch)
      if (zp) {
#pragma omp simd
        for (int64_t i = 0; i < 16 * L; ++i) {
          const float zi = Z[i], gi = DY[i], sz = sigmoid_f(zi);
          GR[i] = gi;
          DY[i] = gi * zi * sz;
        }
      }
""" + pre)
    hs = "            store16(Hs + 256 * (s + 1) + 16 * n, h[m]);"
    v2 = edit(v2, hs, hs + """
            {
              float* ac = accC + 256 * t + 16 * n;
              store16(ac, load16(ac) + h[m] * dyv);
            }""")
    v2 = edit(v2, "          const v16f dt = load16(DT + 16 * s), dtu = load16(DTU + 16 * s);\n"
                  "          const float* Bt = Bb + t * a.sBl + 8 * half;",
              "          const v16f dt = load16(DT + 16 * s), dtu = load16(DTU + 16 * s), dyv = load16(DY + 16 * s);\n"
              "          const float* Bt = Bb + t * a.sBl + 8 * half;")
    v2 = edit(v2, """          const float zi = Z[i], gi = DY[i], sz = sigmoid_f(zi);
          DY[i] = gi * zi * sz;
          Z[i] = gi * Y[i] * sz * (1.0f + zi * (1.0f - sz));""",
              """          const float zi = Z[i], gi = GR[i], sz = sigmoid_f(zi);
          Z[i] = gi * Y[i] * sz * (1.0f + zi * (1.0f - sz));""")
elif mode == "knockouts":
    p2 = "      for (int half = 0; half < 2; ++half) {\n        v16f dh[8] = {}, dA[8];"
    p1 = "      for (int half = 0; half < 2; ++half) {  // 8 states at a time: their states stay in registers"
    v1 = edit(fn.replace("void backward_lanes16(", "void backward_lanes16_v1("), p2, p2.replace("half < 2", "half < 0"))
    v2 = edit(fn.replace("void backward_lanes16(", "void backward_lanes16_v2("), p1, p1.replace("half < 2", "half < 0"))
else:
    raise SystemExit("mode: tweaks | knockouts")
open("bwvariants.inc", "w").write(v1 + "\n\n" + v2 + "\n")
