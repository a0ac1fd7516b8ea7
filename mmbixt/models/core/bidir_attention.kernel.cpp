// Tiled bi-directional cross-attention for CPU inference (mmbixt/models/core/bidir_attention.py).
//
// For one (sample, head) and a tile of BLOCK tokens the similarity S^T = r_tok (scale r_lat)^T
// ([BLOCK, L], latents contiguous) is formed once in a cache-resident buffer and serves both
// directions while it is there:
// - the tokens' softmax over the L latents is local to the tile: E = exp(S^T - n) with n the
//   max over the latents of each token, and the tokens' reads E v_lat / sum(E) are written;
// - the latents' softmax over the tokens is advanced online (running max p, sum of exp, weighted
//   values) from the same E: exp(S - p') = E * exp(n - M) * exp(M - p'), M the tile's largest
//   similarity, so one exponential per similarity serves both softmaxes. Where a latent's largest
//   similarity in the tile lies more than RANGE below M (the product could lose it to underflow),
//   the tile takes a second exponential exp(S - p') instead: exact in every case.
// Every product is a register-tiled GEMM over vectors of the CPU's width (AVX-512, AVX2, or the
// 128-bit baseline elsewhere, ARM included). Inputs are fp32 or bf16 views [B, heads, n, a] with a
// unit last stride; all arithmetic is fp32. Work is split over (sample, head, token group); the
// latents' partial softmaxes of a (sample, head)'s groups are merged at the end.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/util/BFloat16.h>
#include <torch/library.h>

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>
#if defined(__AVX__)
#include <immintrin.h>
#endif

namespace {

#if defined(__AVX512F__)
constexpr int64_t VL = 16;  // floats per vector register
constexpr int SIM_MR = 4, SIM_NV = 4, OUT_MR = 8, OUT_NV = 2, LAT_MR = 4, LAT_NV = 4;
#elif defined(__AVX__)
constexpr int64_t VL = 8;   // 16 registers: tiles of at most 8 accumulators
constexpr int SIM_MR = 4, SIM_NV = 2, OUT_MR = 4, OUT_NV = 2, LAT_MR = 4, LAT_NV = 2;
#else
constexpr int64_t VL = 4;   // SSE, NEON and other 128-bit vector units
constexpr int SIM_MR = 4, SIM_NV = 2, OUT_MR = 4, OUT_NV = 2, LAT_MR = 4, LAT_NV = 2;
#endif
constexpr int64_t BLOCK = 64;        // tokens per tile: S^T [64, L] stays in L1
constexpr float LOWEST = -FLT_MAX;   // "nothing seen yet" (no infinities anywhere)
constexpr float RANGE = 60.0f;       // exp(RANGE) * exp(-87) is far below fp32 resolution

// GCC/Clang vector extensions: explicit register tiles that compile to the CPU's widest vectors.
typedef float vfloat __attribute__((vector_size(VL * sizeof(float))));
typedef int32_t vint __attribute__((vector_size(VL * sizeof(int32_t))));

inline vfloat splat(float x) { return x - vfloat{}; }  // x - 0 is x for every x: a plain broadcast
inline vfloat load(const float* p) { vfloat v; std::memcpy(&v, p, sizeof(v)); return v; }
inline void store(float* p, vfloat v) { std::memcpy(p, &v, sizeof(v)); }
inline vfloat vmax(vfloat a, vfloat b) { return a > b ? a : b; }
inline vfloat vmin(vfloat a, vfloat b) { return a < b ? a : b; }
// Horizontal sum and max: a tree of halvings on x86, a lane loop elsewhere.
#if defined(__AVX512F__)
inline __m512 native(vfloat v) { __m512 m; std::memcpy(&m, &v, sizeof(m)); return m; }
inline float hsum(vfloat v) { return _mm512_reduce_add_ps(native(v)); }
inline float hmax(vfloat v) { return _mm512_reduce_max_ps(native(v)); }
#elif defined(__AVX__)
inline __m128 halves(vfloat v, bool is_max) {
  __m256 m;
  std::memcpy(&m, &v, sizeof(m));
  const __m128 lo = _mm256_castps256_ps128(m), hi = _mm256_extractf128_ps(m, 1);
  return is_max ? _mm_max_ps(lo, hi) : _mm_add_ps(lo, hi);
}
inline float hsum(vfloat v) {
  __m128 x = halves(v, false);
  x = _mm_add_ps(x, _mm_movehl_ps(x, x));
  return _mm_cvtss_f32(_mm_add_ss(x, _mm_movehdup_ps(x)));
}
inline float hmax(vfloat v) {
  __m128 x = halves(v, true);
  x = _mm_max_ps(x, _mm_movehl_ps(x, x));
  return _mm_cvtss_f32(_mm_max_ss(x, _mm_movehdup_ps(x)));
}
#else
inline float hsum(vfloat v) { float s = 0.0f; for (int i = 0; i < VL; ++i) s += v[i]; return s; }
inline float hmax(vfloat v) { float m = v[0]; for (int i = 1; i < VL; ++i) m = std::max(m, v[i]); return m; }
#endif

// exp(x) for x <= 88: Cody-Waite range reduction and a degree-6 polynomial (about 2 ulp); 0 below
// -87 (the bound of normal floats), as a softmax's negligible terms.
inline vfloat vexp(vfloat x) {
  const vfloat tiny = x < -87.0f ? splat(0.0f) : splat(1.0f);
  x = vmin(vmax(x, splat(-87.0f)), splat(88.0f));
  const vfloat magic = splat(12582912.0f);  // 1.5 * 2^23: adding it rounds to an integer
  const vfloat n = (x * 1.44269504088896341f + magic) - magic;
  vfloat r = x - n * 0.693359375f;
  r = r + n * 2.12194440e-4f;
  vfloat p = splat(1.9875691500e-4f);
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const vint bits = (__builtin_convertvector(n, vint) + 127) << 23;
  vfloat scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  return p * scale * tiny;
}

inline float to_float(float v) { return v; }
inline float to_float(c10::BFloat16 v) { return static_cast<float>(v); }

template <typename T>
inline void store_row(T* dst, const float* src, int64_t n) {
  if constexpr (std::is_same<T, float>::value) {
    std::memcpy(dst, src, n * sizeof(float));
  } else {
    for (int64_t i = 0; i < n; ++i) dst[i] = static_cast<T>(src[i]);
  }
}

template <typename T>
struct Heads {  // a [B, heads, n, a] view with a unit last stride
  const T* data;
  int64_t sb, sh, sn;
  const T* row(int64_t b, int64_t h, int64_t i) const { return data + b * sb + h * sh + i * sn; }
};

template <typename T>
Heads<T> heads_of(const at::Tensor& t) {
  return {t.data_ptr<T>(), t.stride(0), t.stride(1), t.stride(2)};
}

// Loaded once, used MR times: without this GCC folds the load into every FMA, MR loads per vector.
inline void keep_in_register(vfloat& v) {
#if defined(__x86_64__)
  asm("" : "+v"(v));
#elif defined(__aarch64__)
  asm("" : "+w"(v));
#endif
}

// C[MR, NV vectors] = sum_k a[i * a_row + k * a_k] * b[k * b_k + q * VL .. +VL]; then epi(acc).
template <int MR, int NV, typename Epilogue>
inline void gemm_tile(const float* a, int64_t a_row, int64_t a_k, const float* b, int64_t b_k,
                      int64_t K, Epilogue epi) {
  vfloat acc[MR][NV] = {};
  for (int64_t k = 0; k < K; ++k) {
    vfloat col[NV];
    for (int q = 0; q < NV; ++q) {
      col[q] = load(b + k * b_k + q * VL);
      keep_in_register(col[q]);
    }
    for (int i = 0; i < MR; ++i) {
      const vfloat w = splat(a[i * a_row + k * a_k]);
      for (int q = 0; q < NV; ++q) acc[i][q] += w * col[q];
    }
  }
  epi(acc);
}

// gemm_tile over rows [0, M) in steps of MR and over `vectors` vectors of columns, NV at a time
// (then one at a time for the rest); epi(acc, row, first vector).
template <int MR, int NV, typename Epilogue>
inline void gemm(const float* a, int64_t a_row, int64_t a_k, const float* b, int64_t b_k,
                 int64_t K, int64_t M, int64_t vectors, Epilogue epi) {
  for (int64_t i = 0; i < M; i += MR) {
    int64_t c = 0;
    for (; c + NV <= vectors; c += NV)
      gemm_tile<MR, NV>(a + i * a_row, a_row, a_k, b + c * VL, b_k, K,
                        [&](vfloat (&acc)[MR][NV]) { epi(acc, i, c); });
    for (; c < vectors; ++c)
      gemm_tile<MR, 1>(a + i * a_row, a_row, a_k, b + c * VL, b_k, K,
                       [&](vfloat (&acc)[MR][1]) { epi(acc, i, c); });
  }
}

struct Partial {  // one token group's share of the latents' softmax: peak [LP], total [LP], acc [A, LP]
  float* peak;
  float* total;
  float* accT;
};

// Per-thread buffers. LP: latents padded to whole vectors (the padded lanes never count).
struct Work {
  int64_t L, LP, A;
  std::vector<float> latT, lat_vals, lane_pad, tok_refs, vals, S, P, tok_peak, weight, row_sum,
      col_sum, lat_peak, out, new_peak, rescale, boost;
  Work(int64_t L_, int64_t A_)
      : L(L_), LP((L_ + VL - 1) / VL * VL), A(A_), latT(A_ * LP), lat_vals(LP * A_, 0.0f),
        lane_pad(LP), tok_refs(BLOCK * A_), vals(BLOCK * A_), S(BLOCK * LP), P(BLOCK * LP),
        tok_peak(BLOCK), weight(BLOCK), row_sum(LP), col_sum(BLOCK), lat_peak(LP),
        out(BLOCK * A_), new_peak(LP), rescale(LP), boost(LP) {
    for (int64_t l = 0; l < LP; ++l) lane_pad[l] = l < L ? 0.0f : LOWEST;
  }
};

// The (b, h) latents: scale r_lat^T [A, LP] (padded columns 0) and v_lat [LP, A] (padded rows 0).
template <typename T>
void load_latents(const Heads<T>& rl, const Heads<T>& vl, int64_t b, int64_t h, float scale,
                  Work& w) {
  std::fill(w.latT.begin(), w.latT.end(), 0.0f);
  for (int64_t l = 0; l < w.L; ++l) {
    const T* r = rl.row(b, h, l);
    const T* v = vl.row(b, h, l);
    for (int64_t k = 0; k < w.A; ++k) {
      w.latT[k * w.LP + l] = to_float(r[k]) * scale;
      w.lat_vals[l * w.A + k] = to_float(v[k]);
    }
  }
}

// S^T = r_tok latT for the tile: each token's max over the latents (tok_peak) and, over the real
// tokens, each latent's max (lat_peak); padded latents read LOWEST.
void similarity(Work& w, const float* valid) {
  const int64_t LP = w.LP, vectors = LP / VL;
  float* lat_max = w.lat_peak.data();  // each latent's max, accumulated in place (L1)
  std::fill(w.lat_peak.begin(), w.lat_peak.end(), LOWEST);
  std::fill(w.tok_peak.begin(), w.tok_peak.end(), LOWEST);
  gemm<SIM_MR, SIM_NV>(w.tok_refs.data(), w.A, 1, w.latT.data(), LP, w.A, BLOCK, vectors,
                       [&](auto& acc, int64_t j0, int64_t c) {
    constexpr int MR = sizeof(acc) / sizeof(acc[0]), NV = sizeof(acc[0]) / sizeof(vfloat);
    for (int i = 0; i < MR; ++i) {
      vfloat row_max = splat(LOWEST);
      for (int q = 0; q < NV; ++q) {
        const vfloat s = acc[i][q] + load(w.lane_pad.data() + (c + q) * VL);
        store(w.S.data() + (j0 + i) * LP + (c + q) * VL, s);
        row_max = vmax(row_max, s);
        float* peak = lat_max + (c + q) * VL;
        if (valid[j0 + i] > 0.0f) store(peak, vmax(load(peak), s));
      }
      w.tok_peak[j0 + i] = std::max(w.tok_peak[j0 + i], hmax(row_max));
    }
  });
}

// In place S^T -> E = exp(S^T - tok_peak) (rows: the tokens' softmax numerators), col_sum the
// tokens' denominators; row_sum += weight_j E[j] (the latents' partial denominators).
void token_softmax(Work& w, bool with_row_sum) {
  const int64_t LP = w.LP, vectors = LP / VL;
  float* lat_sum = w.row_sum.data();  // accumulated in place (L1)
  if (with_row_sum) std::fill(w.row_sum.begin(), w.row_sum.end(), 0.0f);
  for (int64_t j = 0; j < BLOCK; ++j) {
    float* row = w.S.data() + j * LP;
    const vfloat peak = splat(w.tok_peak[j]), weight = splat(w.weight[j]);
    vfloat sum = splat(0.0f);
    for (int64_t q = 0; q < vectors; ++q) {
      const vfloat e = vexp(load(row + q * VL) - peak);
      store(row + q * VL, e);
      sum += e;
      if (with_row_sum) store(lat_sum + q * VL, load(lat_sum + q * VL) + weight * e);
    }
    w.col_sum[j] = hsum(sum);
  }
}

// The fallback numerators P = exp(S^T - new_peak) * valid, and their row sums.
void latent_softmax(Work& w, const float* new_peak, const float* valid) {
  const int64_t LP = w.LP, vectors = LP / VL;
  float* lat_sum = w.row_sum.data();  // accumulated in place (L1)
  std::fill(w.row_sum.begin(), w.row_sum.end(), 0.0f);
  for (int64_t j = 0; j < BLOCK; ++j) {
    const float* s = w.S.data() + j * LP;
    float* p = w.P.data() + j * LP;
    const vfloat real = splat(valid[j]);
    for (int64_t q = 0; q < vectors; ++q) {
      const vfloat e = vexp(load(s + q * VL) - load(new_peak + q * VL)) * real;
      store(p + q * VL, e);
      store(lat_sum + q * VL, load(lat_sum + q * VL) + e);
    }
  }
}

// The tile's tokens read the latents: E v_lat / col_sum, rows written to tok_out.
template <typename T>
void token_reads(Work& w, int64_t count, T* tok_out, int64_t out_stride) {
  const int64_t A = w.A;
  gemm<OUT_MR, OUT_NV>(w.S.data(), w.LP, 1, w.lat_vals.data(), A, w.L, BLOCK, A / VL,
                       [&](auto& acc, int64_t j0, int64_t c) {
    constexpr int MR = sizeof(acc) / sizeof(acc[0]), NV = sizeof(acc[0]) / sizeof(vfloat);
    for (int i = 0; i < MR; ++i) {
      const vfloat inv = splat(1.0f / w.col_sum[j0 + i]);
      for (int q = 0; q < NV; ++q) store(w.out.data() + (j0 + i) * A + (c + q) * VL, acc[i][q] * inv);
    }
  });
  for (int64_t j = 0; j < count; ++j) store_row(tok_out + j * out_stride, w.out.data() + j * A, A);
}

// The latents read the tile's real tokens: accT = accT * rescale + boost * (vals^T numerators),
// total likewise; vals already carry each token's weight.
void latent_reads(Work& w, const float* numerators, int64_t count, const float* rescale,
                  const float* boost, const Partial& part) {
  const int64_t LP = w.LP;
  gemm<LAT_MR, LAT_NV>(w.vals.data(), 1, w.A, numerators, LP, count, w.A, LP / VL,
                       [&](auto& acc, int64_t k0, int64_t c) {
    constexpr int MR = sizeof(acc) / sizeof(acc[0]), NV = sizeof(acc[0]) / sizeof(vfloat);
    for (int q = 0; q < NV; ++q) {
      const vfloat r = load(rescale + (c + q) * VL), d = load(boost + (c + q) * VL);
      for (int i = 0; i < MR; ++i) {
        float* dst = part.accT + (k0 + i) * LP + (c + q) * VL;
        store(dst, load(dst) * r + d * acc[i][q]);
      }
    }
  });
  for (int64_t q = 0; q < LP / VL; ++q) {
    float* total = part.total + q * VL;
    store(total, load(total) * load(rescale + q * VL) + load(boost + q * VL) * load(w.row_sum.data() + q * VL));
  }
}

// The token tile [t0, t0 + count) of one (b, h): both directions from one S^T tile.
template <typename T>
void tile_step(const Heads<T>& rt, const Heads<T>& vt, const bool* mask, T* tok_out,
               int64_t out_stride, int64_t b, int64_t h, int64_t t0, int64_t count, int64_t rt_rows,
               const Partial& part, Work& w) {
  const int64_t A = w.A, LP = w.LP, vectors = LP / VL;
  float valid[BLOCK];
  bool any_valid = false;
  for (int64_t j = 0; j < BLOCK; ++j) {
    const bool real = j < count;
    valid[j] = real && (mask == nullptr || mask[t0 + j]) ? 1.0f : 0.0f;
    any_valid = any_valid || valid[j] > 0.0f;
    float* r = w.tok_refs.data() + j * A;
    float* v = w.vals.data() + j * A;
    if (!real) {
      std::fill(r, r + A, 0.0f);
      std::fill(v, v + A, 0.0f);
      continue;
    }
    const T* rs = rt.row(b, h, t0 + j);
    const T* vs = vt.row(b, h, t0 + j);
    if constexpr (std::is_same<T, float>::value) {
      std::memcpy(r, rs, A * sizeof(float));
      std::memcpy(v, vs, A * sizeof(float));
    } else {
      for (int64_t k = 0; k < A; ++k) { r[k] = to_float(rs[k]); v[k] = to_float(vs[k]); }
    }
    if (t0 + BLOCK + j < rt_rows) {  // the next tile's rows, on their way while this one runs
      __builtin_prefetch(rt.row(b, h, t0 + BLOCK + j));
      __builtin_prefetch(vt.row(b, h, t0 + BLOCK + j));
    }
  }
  similarity(w, valid);
  if (!any_valid) {  // masked tile: only the tokens' reads
    token_softmax(w, false);
    token_reads(w, count, tok_out + t0 * out_stride, out_stride);
    return;
  }
  // The latents' new running max p' and rescale exp(p - p'); the tile's top M and the lowest
  // latent max (padded lanes excluded).
  float top = LOWEST, bottom = FLT_MAX;
  for (int64_t l = 0; l < w.L; ++l) {
    top = std::max(top, w.lat_peak[l]);
    bottom = std::min(bottom, w.lat_peak[l]);
  }
  float* new_peak = w.new_peak.data();
  float* rescale = w.rescale.data();
  float* boost = w.boost.data();
  for (int64_t q = 0; q < vectors; ++q) {
    const vfloat old = load(part.peak + q * VL);
    const vfloat peak = vmax(old, load(w.lat_peak.data() + q * VL));
    store(new_peak + q * VL, peak);
    store(rescale + q * VL, vexp(old - peak));
  }
  for (int64_t q = 0; q < vectors; ++q) store(part.peak + q * VL, load(new_peak + q * VL));
  const bool shared = top - bottom <= RANGE;
  if (shared) {  // weight_j = exp(n_j - M) valid_j, boost_l = exp(M - p'_l) <= exp(RANGE)
    for (int64_t q = 0; q < BLOCK / VL; ++q)
      store(w.weight.data() + q * VL,
            vexp(load(w.tok_peak.data() + q * VL) - top) * load(valid + q * VL));
    for (int64_t q = 0; q < vectors; ++q)
      store(boost + q * VL, vexp(splat(top) - load(new_peak + q * VL)));
    for (int64_t j = 0; j < count; ++j)
      for (int64_t k = 0; k < A; k += VL) {
        float* v = w.vals.data() + j * A + k;
        store(v, load(v) * w.weight[j]);
      }
    token_softmax(w, true);
    token_reads(w, count, tok_out + t0 * out_stride, out_stride);
    latent_reads(w, w.S.data(), count, rescale, boost, part);
  } else {  // a second exponential for the latents' numerators
    latent_softmax(w, new_peak, valid);
    std::fill(boost, boost + LP, 1.0f);
    token_softmax(w, false);
    token_reads(w, count, tok_out + t0 * out_stride, out_stride);
    latent_reads(w, w.P.data(), count, rescale, boost, part);
  }
}

// The latents' reads: each (b, h)'s group partials merged, normalised, written to [B, L, H * A].
template <typename T>
void merge_groups(const std::vector<float>& peaks, const std::vector<float>& totals,
                  const std::vector<float>& accs, int64_t BH, int64_t H, int64_t groups,
                  int64_t L, int64_t LP, int64_t A, T* lat) {
  std::vector<float> acc(A);
  for (int64_t bh = 0; bh < BH; ++bh) {
    const int64_t b = bh / H, h = bh % H;
    for (int64_t l = 0; l < L; ++l) {
      float peak = LOWEST, total = 0.0f;
      std::fill(acc.begin(), acc.end(), 0.0f);
      for (int64_t g = 0; g < groups; ++g) peak = std::max(peak, peaks[(bh * groups + g) * LP + l]);
      for (int64_t g = 0; g < groups; ++g) {
        const int64_t task = bh * groups + g;
        const float rescale = vexp(splat(peaks[task * LP + l] - peak))[0];
        total += totals[task * LP + l] * rescale;
        for (int64_t k = 0; k < A; ++k) acc[k] += accs[(task * A + k) * LP + l] * rescale;
      }
      // No valid token at all: total is 0 and the row is NaN, as for a fully masked softmax.
      T* dst = lat + (b * L + l) * H * A + h * A;
      for (int64_t k = 0; k < A; ++k) dst[k] = static_cast<T>(acc[k] / total);
    }
  }
}

template <typename T>
void run(const at::Tensor& r_lat, const at::Tensor& v_lat, const at::Tensor& r_tok,
         const at::Tensor& v_tok, const c10::optional<at::Tensor>& token_mask, double scale,
         at::Tensor& lat_out, at::Tensor& tok_out, int64_t groups) {
  const int64_t B = r_tok.size(0), H = r_tok.size(1), N = r_tok.size(2), A = r_tok.size(3);
  const int64_t L = r_lat.size(2), LP = (L + VL - 1) / VL * VL;
  const int64_t blocks = (N + BLOCK - 1) / BLOCK;
  groups = std::max<int64_t>(1, std::min(groups, blocks));
  const int64_t group_tokens = (blocks + groups - 1) / groups * BLOCK;
  const auto rl = heads_of<T>(r_lat), vl = heads_of<T>(v_lat);
  const auto rt = heads_of<T>(r_tok), vt = heads_of<T>(v_tok);
  const bool* mask = token_mask ? token_mask->data_ptr<bool>() : nullptr;
  const int64_t mask_sb = token_mask ? token_mask->stride(0) : 0;
  // Per (b, h, group) task: peak [LP], total [LP], accT [A, LP].
  const int64_t tasks = B * H * groups;
  std::vector<float> peaks(tasks * LP, LOWEST), totals(tasks * LP, 0.0f), accs(tasks * A * LP, 0.0f);
  T* tok = tok_out.data_ptr<T>();  // [B, N, H * A]
  at::parallel_for(0, tasks, 1, [&](int64_t begin, int64_t end) {
    Work w(L, A);
    for (int64_t task = begin; task < end; ++task) {
      const int64_t b = task / (H * groups), h = (task / groups) % H, g = task % groups;
      load_latents<T>(rl, vl, b, h, static_cast<float>(scale), w);
      const Partial part{&peaks[task * LP], &totals[task * LP], &accs[task * A * LP]};
      const int64_t last = std::min(N, (g + 1) * group_tokens);
      for (int64_t t0 = g * group_tokens; t0 < last; t0 += BLOCK)
        tile_step<T>(rt, vt, mask ? mask + b * mask_sb : nullptr, tok + b * N * H * A + h * A,
                     H * A, b, h, t0, std::min(BLOCK, last - t0), last, part, w);
    }
  });
  merge_groups<T>(peaks, totals, accs, B * H, H, groups, L, LP, A, lat_out.data_ptr<T>());
}

std::vector<at::Tensor> bidir_attention(const at::Tensor& r_lat, const at::Tensor& v_lat,
                                        const at::Tensor& r_tok, const at::Tensor& v_tok,
                                        const c10::optional<at::Tensor>& token_mask, double scale,
                                        int64_t groups) {
  for (const auto* t : {&r_lat, &v_lat, &r_tok, &v_tok}) {
    TORCH_CHECK(t->dim() == 4 && t->stride(3) == 1 && t->device().is_cpu(),
                "bidir_attention: expects CPU [B, heads, n, a] views with a unit last stride");
    TORCH_CHECK(t->scalar_type() == r_tok.scalar_type(), "bidir_attention: mixed dtypes");
  }
  TORCH_CHECK(!token_mask || (token_mask->scalar_type() == at::kBool && token_mask->dim() == 2 &&
                              token_mask->stride(1) == 1),
              "bidir_attention: token_mask must be bool [B, N] with a unit last stride");
  const int64_t B = r_tok.size(0), H = r_tok.size(1), N = r_tok.size(2), a = r_tok.size(3);
  const int64_t L = r_lat.size(2);
  TORCH_CHECK(a % VL == 0 && a <= 256, "bidir_attention: head width must be a multiple of ", VL,
              " up to 256");
  TORCH_CHECK(L >= 1 && L <= 1024, "bidir_attention: 1 to 1024 latents");
  auto lat_out = at::empty({B, L, H * a}, r_tok.options());
  auto tok_out = at::empty({B, N, H * a}, r_tok.options());
  if (r_tok.scalar_type() == at::kFloat) {
    run<float>(r_lat, v_lat, r_tok, v_tok, token_mask, scale, lat_out, tok_out, groups);
  } else {
    TORCH_CHECK(r_tok.scalar_type() == at::kBFloat16, "bidir_attention: fp32 or bf16 only");
    run<c10::BFloat16>(r_lat, v_lat, r_tok, v_tok, token_mask, scale, lat_out, tok_out, groups);
  }
  return {lat_out, tok_out};
}

}  // namespace

TORCH_LIBRARY(mmbixt_bidir, m) {
  m.def("bidir_attention(Tensor r_lat, Tensor v_lat, Tensor r_tok, Tensor v_tok, Tensor? token_mask, "
        "float scale, int groups) -> Tensor[]");
  m.impl("bidir_attention", c10::DispatchKey::CPU, &bidir_attention);
}
