// Fused CPU kernel for the additive decoder's output layer (scvae_beta.nn.additive):
//
//     out[b, g] = log sum_d exp(bias[d, g] + sum_k h[d, b, k] w[d, k, g])
//
// with h (D, B, H), w (D, H, G), bias (D, G), out (B, G), all float32 and C-contiguous.
// One pass forms each (d, b, g) entry in registers, reduces it and drops it; the backward
// recomputes the entries and accumulates all three gradients in the same pass. Built at first
// use by scvae_beta/nn/_native.py (g++ or clang++, -O3 -mavx2 -mfma -fopenmp) and called through ctypes;
// without a compiler the package uses the PyTorch path. GCC vector extensions, no intrinsics.
//
// Work split: the forward gives each thread whole tiles of genes, the backward whole latent
// dimensions, so every output is summed by one thread in a fixed order: the results do not
// depend on the thread count. exp and log are Cephes' single-precision polynomials (about one
// ulp); the shifted entries are clamped at -50 before exp, as in the PyTorch path.
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

// exp(x) for x in [-87, 1] (callers clamp below); NaN stays NaN.
static inline vf vexp(vf x) {
  vf t = x * vs(1.44269504088896341f) + vs(12582912.0f);  // 1.5 * 2^23: round to nearest
  vf n = t - vs(12582912.0f);
  vi ni = (vi)t - 0x4B400000;
  vf r = x - n * vs(0.693359375f) - n * vs(-2.12194440e-4f);
  vf p = vs(1.9875691500E-4f);
  p = p * r + vs(1.3981999507E-3f);
  p = p * r + vs(8.3334519073E-3f);
  p = p * r + vs(4.1665795894E-2f);
  p = p * r + vs(1.6666665459E-1f);
  p = p * r + vs(5.0000001201E-1f);
  vf y = p * r * r + r + vs(1.0f);
  vf e = (vf)((vi)y + (ni << 23));
  return x == x ? e : x;
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
// Tiles of NVF vectors of genes; cells in groups of CBF share each weight load.
#define NVF 2
#define CBF 4
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
      for (int c = 0; c < nc; ++c) {
        for (int v = 0; v < NVF; ++v) {
          const float *col = ab + c * D * TGF + v * VL;
          vf m = vld(col);
          vi bad = !(m < vs(__builtin_inff()));  // NaN or +inf anywhere: NaN out
          for (int64_t d = 1; d < D; ++d) {
            vf x = vld(col + d * TGF);
            bad |= !(x < vs(__builtin_inff()));
            m = vmax(m, x);
          }
          bad |= m == vs(-__builtin_inff());
          vf s = vs(0.f);
          for (int64_t d = 0; d < D; ++d) s += vexp(vfloor(vld(col + d * TGF) - m, kFloor));
          vf r = vlog(s) + m;
          r = bad ? vs(__builtin_nanf("")) : r;
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
// grad_h[d] = grad_a[d] w[d]^T. Tiles of NVB vectors of genes; cells in pairs.
#define NVB 4
#define CBB 2
#define TGB (NVB * VL)

static void *backward_part(void *arg) {
  Job &a = *(Job *)arg;
  const int64_t D = a.D, B = a.B, H = a.H, G = a.G;
  const int64_t ntile = (G + TGB - 1) / TGB;
  const int64_t Bp = (B + CBB - 1) / CBB * CBB;
  float *buf = (float *)malloc(sizeof(float) * (2 * H * TGB + 2 * TGB + Bp * H * VL + Bp * H));
  if (!buf) { a.failed = 1; return NULL; }
  float *wt = buf, *gwt = wt + H * TGB, *bt = gwt + H * TGB, *gbt = bt + TGB;
  float *ghv = gbt + TGB;           // [b][k][VL]: grad h, lane-wise partial sums
  float *hpad = ghv + Bp * H * VL;  // h[d], zero-padded to Bp cells
  float lpad[CBB][TGB], gpad[CBB][TGB];
  for (int64_t d = a.t; d < D; d += a.T) {
    memset(ghv, 0, sizeof(float) * Bp * H * VL);
    memcpy(hpad, a.h + d * B * H, sizeof(float) * B * H);
    memset(hpad + B * H, 0, sizeof(float) * (Bp - B) * H);
    for (int64_t tile = 0; tile < ntile; ++tile) {
      const int64_t g0 = tile * TGB, n = G - g0 < TGB ? G - g0 : TGB;
      for (int64_t k = 0; k < H; ++k) {
        const float *src = a.w + (d * H + k) * G + g0;
        for (int64_t j = 0; j < TGB; ++j) wt[k * TGB + j] = j < n ? src[j] : 0.f;
      }
      for (int64_t j = 0; j < TGB; ++j) bt[j] = j < n ? a.b[d * G + g0 + j] : 0.f;
      memset(gwt, 0, sizeof(float) * H * TGB);
      memset(gbt, 0, sizeof(float) * TGB);
      for (int64_t b0 = 0; b0 < Bp; b0 += CBB) {
        const float *lr[CBB], *gr[CBB];
        for (int c = 0; c < CBB; ++c) {
          const int64_t b = b0 + c;
          if (n < TGB || b >= B) {  // ragged tile or padding cell: zero incoming gradient
            for (int64_t j = 0; j < TGB; ++j) {
              const bool ok = j < n && b < B;
              lpad[c][j] = ok ? a.lse[b * G + g0 + j] : 0.f;
              gpad[c][j] = ok ? a.go[b * G + g0 + j] : 0.f;
            }
            lr[c] = lpad[c];
            gr[c] = gpad[c];
          } else {
            lr[c] = a.lse + b * G + g0;
            gr[c] = a.go + b * G + g0;
          }
        }
        const float *hb = hpad + b0 * H;
        vf pv[CBB][NVB];
        for (int v = 0; v < NVB; ++v) {
          vf bv = vld(bt + v * VL);
          for (int c = 0; c < CBB; ++c) pv[c][v] = bv;
        }
        for (int64_t k = 0; k < H; ++k) {
          for (int v = 0; v < NVB; ++v) {
            vf wv = vld(wt + k * TGB + v * VL);
            for (int c = 0; c < CBB; ++c) pv[c][v] += vs(hb[c * H + k]) * wv;
          }
        }
        for (int v = 0; v < NVB; ++v) {
          vf sb = vld(gbt + v * VL);
          for (int c = 0; c < CBB; ++c) {
            pv[c][v] = vexp(vfloor(pv[c][v] - vld(lr[c] + v * VL), kFloor)) * vld(gr[c] + v * VL);
            sb += pv[c][v];
          }
          vst(gbt + v * VL, sb);
        }
        for (int64_t k = 0; k < H; ++k) {
          vf s[CBB];
          for (int c = 0; c < CBB; ++c) s[c] = vf{};
          for (int v = 0; v < NVB; ++v) {
            vf wv = vld(wt + k * TGB + v * VL);
            vf g = vld(gwt + k * TGB + v * VL);
            for (int c = 0; c < CBB; ++c) {
              g += vs(hb[c * H + k]) * pv[c][v];
              s[c] += pv[c][v] * wv;
            }
            vst(gwt + k * TGB + v * VL, g);
          }
          for (int c = 0; c < CBB; ++c) {
            float *q = ghv + ((b0 + c) * H + k) * VL;
            vst(q, vld(q) + s[c]);
          }
        }
      }
      for (int64_t k = 0; k < H; ++k) memcpy(a.gw + (d * H + k) * G + g0, gwt + k * TGB, sizeof(float) * n);
      memcpy(a.gb + d * G + g0, gbt, sizeof(float) * n);
    }
    float *ghd = a.gh + d * B * H;
    for (int64_t i = 0; i < B * H; ++i) {
      float s = 0.f;
      for (int l = 0; l < VL; ++l) s += ghv[i * VL + l];
      ghd[i] = s;
    }
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
