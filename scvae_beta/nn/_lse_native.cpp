// Fused CPU kernel for the additive decoder's output layer (scvae_beta.nn.additive):
//
//     out[b, g] = log sum_d exp(bias[d, g] + sum_k h[d, b, k] w[d, k, g])
//
// with h (D, B, H), w (D, H, G), bias (D, G), out (B, G), all float32 and C-contiguous.
// One pass forms each (d, b, g) entry in registers, reduces it and drops it; the backward
// recomputes the entries a block at a time into a small buffer of softmax weights (in L1) and
// adds their products to all three gradients. Built at first use by scvae_beta/nn/_native.py
// (g++ or clang++, -O3 -mavx2 -mfma -fopenmp) and called through ctypes; without a compiler
// the package uses the PyTorch path. GCC vector extensions, no intrinsics.
//
// Work split: the forward gives each thread whole tiles of genes, the backward whole latent
// dimensions, so every output is summed by one thread in a fixed order: the results do not
// depend on the thread count. exp is a degree-5 polynomial after the usual range reduction
// (relative error 2.2e-7, about two ulp), log Cephes' single-precision one (about one ulp); the
// shifted entries are clamped at -50 before exp, as in the PyTorch path.
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>

#define VL 8  // floats per vector (256-bit)
typedef float vf __attribute__((vector_size(VL * 4)));
typedef int32_t vi __attribute__((vector_size(VL * 4)));

static inline vf vld(const float *p) { vf v; memcpy(&v, p, sizeof v); return v; }
static inline void vst(float *p, vf v) { memcpy(p, &v, sizeof v); }
static inline vf vs(float x) { return vf{} + x; }
static inline vf vmax(vf a, vf b) { return a > b ? a : b; }
// max(x, lo) that keeps NaN (a comparison with NaN is false).
static inline vf vfloor(vf x, float lo) { return x < vs(lo) ? vs(lo) : x; }

static const float kFloor = -50.0f;

// exp(x) for x in [-87, 1] (callers clamp below); NaN stays NaN. exp(x) = 2^n exp(r) with
// n = round(x / ln 2), r = x - n ln 2 in [-ln 2 / 2, ln 2 / 2] (one FMA: |n| <= 126 keeps the
// error of ln 2 in float below 2e-7 relative), exp(r) by a degree-5 polynomial (relative
// error 2.2e-7 in float32, near-minimax on that interval), 2^n added to the exponent bits.
static inline vf vexp(vf x) {
  const vf t = x * vs(1.44269504088896341f) + vs(12582912.0f);  // 1.5 * 2^23: n in low bits
  const vf n = t - vs(12582912.0f);
  const vf r = x - n * vs(0.693147180559945309f);
  vf p = vs(8.29765014e-3f);
  p = p * r + vs(4.19153795e-2f);
  p = p * r + vs(1.66675746e-1f);
  p = p * r + vs(4.99988943e-1f);
  p = p * r + vs(9.99999702e-1f);
  p = p * r + vs(1.00000012f);
  const vf e = (vf)((vi)p + ((vi)t << 23));  // t's low bits hold n (bias bits shift out)
  return e > x ? e : x;  // exp(x) > x for every real x: only NaN takes x
}

// log(x) for x in [1, 2^100] (a sum of exps whose largest term is 1).
static inline vf vlog(vf x) {
  vi bits = (vi)x;
  vi e = ((bits >> 23) & 0xff) - 126;
  vf m = (vf)((bits & 0x807fffff) | 0x3f000000);  // mantissa in [0.5, 1)
  vi small = m < vs(0.707106781186547524f);      // -1 where true
  vf ef = __builtin_convertvector(e + small, vf);
  m = small ? m + m - vs(1.0f) : m - vs(1.0f);
  vf z = m * m;
  vf y = vs(7.0376836292E-2f);
  y = y * m + vs(-1.1514610310E-1f);
  y = y * m + vs(1.1676998740E-1f);
  y = y * m + vs(-1.2420140846E-1f);
  y = y * m + vs(1.4249322787E-1f);
  y = y * m + vs(-1.6668057665E-1f);
  y = y * m + vs(2.0000714765E-1f);
  y = y * m + vs(-2.4999993993E-1f);
  y = y * m + vs(3.3333331174E-1f);
  y = y * m * z;
  y = y + ef * vs(-2.12194440e-4f);
  y = y - vs(0.5f) * z;
  return m + y + ef * vs(0.693359375f);
}

struct Job {
  const float *h, *w, *b, *lse, *go;
  float *out, *gh, *gw, *gb;
  int64_t D, B, H, G;
  int t, T;
  int failed;
};

#ifdef _OPENMP
#include <omp.h>
// Built with -fopenmp, the library needs libgomp.so.1, which in a process that has imported
// PyTorch is PyTorch's own: the kernel then runs on PyTorch's OpenMP threads (separate threads
// would compete with PyTorch's spinning idle workers for the cores).
static int run_threads(void *(*fn)(void *), const Job &job, int T) {
  if (T < 1) T = 1;
  int failed = 0;
#pragma omp parallel num_threads(T) reduction(| : failed)
  {
    Job mine = job;
    mine.t = omp_get_thread_num();
    mine.T = omp_get_num_threads();
    mine.failed = 0;
    fn(&mine);
    failed |= mine.failed;
  }
  return failed;
}
#else
static int run_threads(void *(*fn)(void *), const Job &job, int T) {
  if (T < 1) T = 1;
  Job *jobs = (Job *)malloc(sizeof(Job) * T);
  pthread_t *th = (pthread_t *)malloc(sizeof(pthread_t) * T);
  if (!jobs || !th) { free(jobs); free(th); return 1; }
  for (int t = 0; t < T; ++t) { jobs[t] = job; jobs[t].t = t; jobs[t].T = T; jobs[t].failed = 0; }
  int started = 1;
  for (int t = 1; t < T; ++t, ++started)
    if (pthread_create(&th[t], NULL, fn, &jobs[t]) != 0) break;
  // Threads that could not start: their share runs here, after this thread's own.
  fn(&jobs[0]);
  for (int t = started; t < T; ++t) fn(&jobs[t]);
  for (int t = 1; t < started; ++t) pthread_join(th[t], NULL);
  int failed = 0;
  for (int t = 0; t < T; ++t) failed |= jobs[t].failed;
  free(jobs); free(th);
  return failed;
}
#endif

// ---------------------------------------------------------------- forward
// Tiles of NVF vectors of genes; cells in groups of CBF share each weight load (3 cells x 4
// vectors: 12 accumulators, 7 loads per 12 FMAs; 4 x 2 was ~20 % slower here).
#define NVF 4
#define CBF 3
#define TGF (NVF * VL)

static void *forward_part(void *arg) {
  Job &a = *(Job *)arg;
  const int64_t D = a.D, B = a.B, H = a.H, G = a.G;
  const int64_t ntile = (G + TGF - 1) / TGF;
  float *wt = (float *)malloc(sizeof(float) * (D * H * TGF + D * TGF + CBF * D * TGF));
  if (!wt) { a.failed = 1; return NULL; }
  float *bt = wt + D * H * TGF;  // [d][TGF]
  float *ab = bt + D * TGF;      // [c][d][TGF]: the entries of CBF cells
  for (int64_t tile = a.t; tile < ntile; tile += a.T) {
    const int64_t g0 = tile * TGF, n = G - g0 < TGF ? G - g0 : TGF;
    for (int64_t d = 0; d < D; ++d) {  // this tile's weights, zero-padded to TGF genes
      for (int64_t k = 0; k < H; ++k) {
        const float *src = a.w + (d * H + k) * G + g0;
        float *dst = wt + (d * H + k) * TGF;
        for (int64_t j = 0; j < TGF; ++j) dst[j] = j < n ? src[j] : 0.f;
      }
      for (int64_t j = 0; j < TGF; ++j) bt[d * TGF + j] = j < n ? a.b[d * G + g0 + j] : 0.f;
    }
    for (int64_t b0 = 0; b0 < B; b0 += CBF) {
      const int nc = B - b0 < CBF ? (int)(B - b0) : CBF;
      for (int64_t d = 0; d < D; ++d) {
        vf acc[CBF][NVF];
        for (int v = 0; v < NVF; ++v) {
          vf bv = vld(bt + d * TGF + v * VL);
          for (int c = 0; c < CBF; ++c) acc[c][v] = bv;
        }
        const float *hd = a.h + (d * B + b0) * H;
        for (int64_t k = 0; k < H; ++k) {
          const float *wk = wt + (d * H + k) * TGF;
          for (int v = 0; v < NVF; ++v) {
            vf wv = vld(wk + v * VL);
            for (int c = 0; c < CBF; ++c) acc[c][v] += vs(hd[(c < nc ? c : 0) * H + k]) * wv;
          }
        }
        for (int c = 0; c < CBF; ++c)
          for (int v = 0; v < NVF; ++v) vst(ab + (c * D + d) * TGF + v * VL, acc[c][v]);
      }
      // Reduce over d, the NVF columns of a cell side by side (independent chains). NaN and
      // +inf need no test: an x of NaN, an m of +inf or -inf make x - m NaN, exp keeps it,
      // and a NaN sum gives a NaN output (vlog alone would not keep it).
      for (int c = 0; c < nc; ++c) {
        const float *col = ab + c * D * TGF;
        vf m[NVF], s[NVF];
        for (int v = 0; v < NVF; ++v) m[v] = vld(col + v * VL);
        for (int64_t d = 1; d < D; ++d)
          for (int v = 0; v < NVF; ++v) m[v] = vmax(m[v], vld(col + d * TGF + v * VL));
        for (int v = 0; v < NVF; ++v) s[v] = vs(0.f);
        for (int64_t d = 0; d < D; ++d)
          for (int v = 0; v < NVF; ++v) s[v] += vexp(vfloor(vld(col + d * TGF + v * VL) - m[v], kFloor));
        for (int v = 0; v < NVF; ++v) {
          const vf r = s[v] == s[v] ? vlog(s[v]) + m[v] : s[v];
          float *o = a.out + (b0 + c) * G + g0 + v * VL;
          const int64_t left = n - v * VL;
          if (left >= VL) vst(o, r);
          else for (int64_t j = 0; j < left; ++j) o[j] = r[j];
        }
      }
    }
  }
  free(wt);
  return NULL;
}

// ---------------------------------------------------------------- backward
// grad_a[d, b, g] = exp(a - out) * grad_out (the softmax weight over d times the incoming
// gradient); then grad_w[d] = h[d]^T grad_a[d], grad_bias[d] = sum_b grad_a[d],
// grad_h[d] = grad_a[d] w[d]^T. For a block of CBK cells and a tile of TGB genes, the
// weights grad_a go to a buffer P (in L1); two register-tiled products then add P's share to
// grad_w and grad_h. Loops: cell blocks, then tiles of genes, then the thread's dimensions:
// a tile of the block's out and grad_out is read from memory once for all of them (with the
// dimensions outside the tiles it was re-read per dimension, from L3). The entries are formed
// first (phase A1, a register-tiled product) and exponentiated in a second sweep over the
// buffer (A2): two simple loops run faster than one that waits on each product's exp.
#define NVB 6                 // vectors of genes per tile
#define TGB (NVB * VL)        // 48 genes
#define CBK 128               // cells per block (a multiple of 4)

static inline int64_t round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

// grad_h of R cells (from c) and NV vectors of hidden units (from k0) += P (R x TGB) w^T,
// w^T given as wtT [TGB][HP]; each lane sums over the tile's genes in order.
template <int R, int NV>
static inline void phase_c(const float *P, const float *wtT, int64_t HP, float *gh, int64_t c,
                           int64_t k0) {
  vf acc[R][NV];
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < NV; ++v) acc[r][v] = vf{};
  for (int64_t j = 0; j < TGB; ++j) {
    vf w[NV];
    for (int v = 0; v < NV; ++v) w[v] = vld(wtT + j * HP + k0 + v * VL);
    for (int r = 0; r < R; ++r) {
      const vf x = vs(P[(c + r) * TGB + j]);
      for (int v = 0; v < NV; ++v) acc[r][v] += x * w[v];
    }
  }
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < NV; ++v) {
      float *q = gh + (c + r) * HP + k0 + v * VL;
      vst(q, vld(q) + acc[r][v]);
    }
}

static void *backward_part(void *arg) {
  Job &a = *(Job *)arg;
  const int64_t D = a.D, B = a.B, H = a.H, G = a.G;
  const int64_t ntile = (G + TGB - 1) / TGB;
  const int64_t H4 = round_up(H, 4), HP = round_up(H, 8);
  const int64_t nd = a.t < D ? (D - a.t + a.T - 1) / a.T : 0;  // this thread's dimensions
  const size_t nbuf = (size_t)(H * TGB + TGB * HP + 2 * TGB + H4 * TGB + 3 * CBK * TGB +
                               nd * CBK * (H4 + HP));
  float *buf = (float *)malloc(sizeof(float) * nbuf);
  if (!buf) { a.failed = 1; return NULL; }
  float *wt = buf;                 // [H][TGB]   this tile's weights of one dimension
  float *wtT = wt + H * TGB;       // [TGB][HP]  the same, transposed, zero-padded (HP: h to 8)
  float *bt = wtT + TGB * HP;      // [TGB]
  float *gbt = bt + TGB;           // [TGB]
  float *gwt = gbt + TGB;          // [H4][TGB]  grad_w tile
  float *P = gwt + H4 * TGB;       // [CBK][TGB] entries, then grad_a, of the block
  float *lt = P + CBK * TGB;       // [CBK][TGB] out of the block's cells in this tile, padded
  float *gt = lt + CBK * TGB;      // [CBK][TGB] grad_out, the same
  float *hpa = gt + CBK * TGB;     // [nd][CBK][H4]  h of the block, zero-padded
  float *gha = hpa + nd * CBK * H4;  // [nd][CBK][HP] grad_h of the block
  memset(wtT, 0, sizeof(float) * TGB * HP);
  for (int64_t c0 = 0; c0 < B; c0 += CBK) {
    const int64_t nc = B - c0 < CBK ? B - c0 : CBK;  // cells in this block
    const int64_t nc4 = round_up(nc, 4);
    memset(hpa, 0, sizeof(float) * nd * CBK * (H4 + HP));
    for (int64_t i = 0; i < nd; ++i)
      for (int64_t c = 0; c < nc; ++c)
        memcpy(hpa + (i * CBK + c) * H4, a.h + ((a.t + i * a.T) * B + c0 + c) * H, sizeof(float) * H);
    // Genes outermost: the block's out and grad_out of a tile are read from memory once and
    // serve every dimension of the thread.
    for (int64_t tile = 0; tile < ntile; ++tile) {
      const int64_t g0 = tile * TGB, n = G - g0 < TGB ? G - g0 : TGB;
      // Ragged tile or padding cell: weight 0. Its entry may be any bias (h is 0 there), so
      // out is padded with 1e30, not 0: exp(a - out) must not overflow into inf * 0.
      for (int64_t c = 0; c < nc4; ++c) {
        if (n == TGB && c < nc) {
          memcpy(lt + c * TGB, a.lse + (c0 + c) * G + g0, sizeof(float) * TGB);
          memcpy(gt + c * TGB, a.go + (c0 + c) * G + g0, sizeof(float) * TGB);
        } else {
          for (int64_t j = 0; j < TGB; ++j) {
            const bool ok = j < n && c < nc;
            lt[c * TGB + j] = ok ? a.lse[(c0 + c) * G + g0 + j] : 1e30f;
            gt[c * TGB + j] = ok ? a.go[(c0 + c) * G + g0 + j] : 0.f;
          }
        }
      }
      for (int64_t i = 0; i < nd; ++i) {
        const int64_t d = a.t + i * a.T;
        const float *hp = hpa + i * CBK * H4;
        float *gh = gha + i * CBK * HP;
        for (int64_t k = 0; k < H; ++k) {
          const float *src = a.w + (d * H + k) * G + g0;
          for (int64_t j = 0; j < TGB; ++j) {
            const float x = j < n ? src[j] : 0.f;
            wt[k * TGB + j] = x;
            wtT[j * HP + k] = x;
          }
        }
        for (int64_t j = 0; j < TGB; ++j) bt[j] = j < n ? a.b[d * G + g0 + j] : 0.f;
        memset(gwt, 0, sizeof(float) * H4 * TGB);
        if (c0 > 0) {  // earlier blocks' sums, from the output
          for (int64_t k = 0; k < H; ++k) memcpy(gwt + k * TGB, a.gw + (d * H + k) * G + g0, sizeof(float) * n);
          memcpy(gbt, a.gb + d * G + g0, sizeof(float) * n);
        } else {
          memset(gbt, 0, sizeof(float) * TGB);
        }
        // Phase A1: the entries a = bias + h w of the block's cells into P, two at a time.
        for (int64_t c = 0; c < nc4; c += 2) {
          vf pv[2][NVB];
          for (int v = 0; v < NVB; ++v) pv[0][v] = pv[1][v] = vld(bt + v * VL);
          const float *h0 = hp + c * H4, *h1 = h0 + H4;
          for (int64_t k = 0; k < H; ++k) {
            const vf x0 = vs(h0[k]), x1 = vs(h1[k]);
            for (int v = 0; v < NVB; ++v) {
              const vf wv = vld(wt + k * TGB + v * VL);
              pv[0][v] += x0 * wv;
              pv[1][v] += x1 * wv;
            }
          }
          for (int v = 0; v < NVB; ++v) {
            vst(P + c * TGB + v * VL, pv[0][v]);
            vst(P + (c + 1) * TGB + v * VL, pv[1][v]);
          }
        }
        // Phase A2: P = exp(a - out) * grad_out in place; grad_bias sums it over the cells.
        {
          vf sb[NVB];
          for (int v = 0; v < NVB; ++v) sb[v] = vld(gbt + v * VL);
          for (int64_t c = 0; c < nc4; ++c) {
            float *pc = P + c * TGB;
            for (int v = 0; v < NVB; ++v) {
              const vf p = vexp(vfloor(vld(pc + v * VL) - vld(lt + c * TGB + v * VL), kFloor)) *
                           vld(gt + c * TGB + v * VL);
              vst(pc + v * VL, p);
              sb[v] += p;
            }
          }
          for (int v = 0; v < NVB; ++v) vst(gbt + v * VL, sb[v]);
        }
        // Phase B: grad_w[k, tile] += sum_c h[c, k] P[c, tile], 4 k x 3 vectors in registers.
        for (int64_t k0 = 0; k0 < H4; k0 += 4) {
          for (int v0 = 0; v0 < NVB; v0 += 3) {
            vf acc[4][3];
            for (int r = 0; r < 4; ++r)
              for (int j = 0; j < 3; ++j) acc[r][j] = vld(gwt + (k0 + r) * TGB + (v0 + j) * VL);
            for (int64_t c = 0; c < nc4; ++c) {
              const vf p0 = vld(P + c * TGB + v0 * VL), p1 = vld(P + c * TGB + (v0 + 1) * VL),
                       p2 = vld(P + c * TGB + (v0 + 2) * VL);
              const float *hc = hp + c * H4 + k0;
              for (int r = 0; r < 4; ++r) {
                const vf x = vs(hc[r]);
                acc[r][0] += x * p0;
                acc[r][1] += x * p1;
                acc[r][2] += x * p2;
              }
            }
            for (int r = 0; r < 4; ++r)
              for (int j = 0; j < 3; ++j) vst(gwt + (k0 + r) * TGB + (v0 + j) * VL, acc[r][j]);
          }
        }
        // Phase C: grad_h[c, k] += sum_g P[c, g] w[k, g]: 4 cells x 16 k in registers, and
        // 8 cells x 8 k for the last 8 units when HP is not a multiple of 16 (h 8, 24, ...).
        {
          int64_t k0 = 0;
          for (; k0 + 16 <= HP; k0 += 16)
            for (int64_t c = 0; c < nc4; c += 4) phase_c<4, 2>(P, wtT, HP, gh, c, k0);
          if (k0 < HP) {
            int64_t c = 0;
            for (; c + 8 <= nc4; c += 8) phase_c<8, 1>(P, wtT, HP, gh, c, k0);
            for (; c < nc4; c += 4) phase_c<4, 1>(P, wtT, HP, gh, c, k0);
          }
        }
        for (int64_t k = 0; k < H; ++k) memcpy(a.gw + (d * H + k) * G + g0, gwt + k * TGB, sizeof(float) * n);
        memcpy(a.gb + d * G + g0, gbt, sizeof(float) * n);
      }
    }
    for (int64_t i = 0; i < nd; ++i)
      for (int64_t c = 0; c < nc; ++c)
        memcpy(a.gh + ((a.t + i * a.T) * B + c0 + c) * H, gha + (i * CBK + c) * HP, sizeof(float) * H);
  }
  free(buf);
  return NULL;
}

extern "C" {
// Returns 0 on success, 1 when memory ran out.
int scvae_lse_forward(const float *h, const float *w, const float *b, float *out, int64_t D,
                      int64_t B, int64_t H, int64_t G, int threads) {
  Job job = {h, w, b, NULL, NULL, out, NULL, NULL, NULL, D, B, H, G, 0, 1, 0};
  return run_threads(forward_part, job, threads < 1 ? 1 : threads);
}

int scvae_lse_backward(const float *h, const float *w, const float *b, const float *lse,
                       const float *go, float *gh, float *gw, float *gb, int64_t D, int64_t B,
                       int64_t H, int64_t G, int threads) {
  Job job = {h, w, b, lse, go, NULL, gh, gw, gb, D, B, H, G, 0, 1, 0};
  return run_threads(backward_part, job, threads < 1 ? 1 : (threads > D ? (int)D : threads));
}

int scvae_lse_version(void) { return 1; }

// 1 when built with OpenMP (the threads are PyTorch's), 0 with its own POSIX threads.
int scvae_lse_openmp(void) {
#ifdef _OPENMP
  return 1;
#else
  return 0;
#endif
}
}
