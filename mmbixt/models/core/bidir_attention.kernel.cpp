// Fused bi-directional cross-attention for CPU inference (mmbixt/models/core/bidir_attention.py).
//
// For one (sample, head) and a block of BLOCK tokens the similarity S = r_lat r_tok^T * scale
// ([L, BLOCK]) is formed once in a cache-resident buffer; from it the tokens' softmax over the
// latents and their weighted sum of the latents' values are finished for the block, and the
// latents' softmax over the tokens is advanced online (running max, sum of exp and weighted
// values), so S is read from cache by both directions and never stored whole. Inputs are fp32 or
// bf16 views [B, heads, n, a] with a unit last stride; all arithmetic is fp32. Work is split over
// (sample, head, token group); the latents' partial softmaxes of a (sample, head)'s groups are
// merged at the end.
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

namespace {

constexpr int64_t BLOCK = 64;        // tokens per block: an S block [L, 64] stays in L1/L2
constexpr int64_t VL = 16;           // floats per vector (one AVX-512 register, two AVX2 ones)
constexpr int64_t NV = BLOCK / VL;   // vectors per block row
constexpr int64_t TILE = 4;          // latent rows per register tile
constexpr float LOWEST = -FLT_MAX;   // "no token seen yet" running max (no infinities anywhere)

// GCC/Clang vector extensions: explicit register tiles that compile to the CPU's widest vectors.
typedef float vfloat __attribute__((vector_size(VL * sizeof(float))));
typedef int32_t vint __attribute__((vector_size(VL * sizeof(int32_t))));

inline vfloat splat(float x) { return vfloat{} + x; }
inline vfloat load(const float* p) { vfloat v; std::memcpy(&v, p, sizeof(v)); return v; }
inline void store(float* p, vfloat v) { std::memcpy(p, &v, sizeof(v)); }
inline vfloat vmax(vfloat a, vfloat b) { return a > b ? a : b; }
inline float hsum(vfloat v) { float s = 0.0f; for (int i = 0; i < VL; ++i) s += v[i]; return s; }
inline float hmax(vfloat v) { float m = v[0]; for (int i = 1; i < VL; ++i) m = std::max(m, v[i]); return m; }

// exp for x <= 0 (softmax arguments): Cody-Waite range reduction and a degree-6 polynomial
// (about 2 ulp), on whole vectors.
inline vfloat exp_nonpositive(vfloat x) {
  x = vmax(x, splat(-87.0f));
  x = x < 0.0f ? x : splat(0.0f);
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
  return p * scale;
}

inline float exp_scalar(float x) { return exp_nonpositive(splat(x))[0]; }

template <typename T>
inline float to_float(T v) { return static_cast<float>(v); }

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

struct Partial {  // one token group's share of the latents' softmax: [L], [L], [L, A]
  float* peak;
  float* total;
  float* acc;
};

// Scratch of one block; L rows of S and of the exp of either softmax.
struct Work {
  std::vector<float> rtT, vtb, S, P, outT, valid;
  Work(int64_t L, int64_t A)
      : rtT(A * BLOCK), vtb(BLOCK * A), S(L * BLOCK), P(L * BLOCK), outT(A * BLOCK), valid(BLOCK) {}
};

// S[l, :] = r_lat[l] . (scale r_tok)^T for TILE latent rows at a time: TILE x NV accumulators.
template <int A>
void similarity(const float* rl, const float* rtT, float* S, int64_t L) {
  for (int64_t l = 0; l < L; l += TILE) {
    vfloat acc[TILE][NV] = {};
    for (int k = 0; k < A; ++k) {
      vfloat col[NV];
      for (int q = 0; q < NV; ++q) col[q] = load(rtT + k * BLOCK + q * VL);
      for (int i = 0; i < TILE; ++i) {
        const vfloat w = splat(rl[(l + i) * A + k]);
        for (int q = 0; q < NV; ++q) acc[i][q] += w * col[q];
      }
    }
    for (int i = 0; i < TILE; ++i)
      for (int q = 0; q < NV; ++q) store(S + (l + i) * BLOCK + q * VL, acc[i][q]);
  }
}

// The tokens of the block read the latents: softmax of each column of S over the L latents,
// weighted sum of v_lat, written to tok_out (rows of out_stride, this head's A columns).
template <int A, typename T>
void token_side(const float* S, const float* vl, Work& w, int64_t L, int64_t count, T* tok_out,
                int64_t out_stride) {
  vfloat colmax[NV], colsum[NV];
  for (int q = 0; q < NV; ++q) { colmax[q] = splat(LOWEST); colsum[q] = splat(0.0f); }
  for (int64_t l = 0; l < L; ++l)
    for (int q = 0; q < NV; ++q) colmax[q] = vmax(colmax[q], load(S + l * BLOCK + q * VL));
  for (int64_t l = 0; l < L; ++l)
    for (int q = 0; q < NV; ++q) {
      const vfloat e = exp_nonpositive(load(S + l * BLOCK + q * VL) - colmax[q]);
      store(w.P.data() + l * BLOCK + q * VL, e);
      colsum[q] += e;
    }
  for (int k = 0; k < A; k += TILE) {  // outT[k, :] = sum_l v_lat[l, k] P[l, :]
    vfloat acc[TILE][NV] = {};
    for (int64_t l = 0; l < L; ++l) {
      vfloat p[NV];
      for (int q = 0; q < NV; ++q) p[q] = load(w.P.data() + l * BLOCK + q * VL);
      for (int i = 0; i < TILE; ++i) {
        const vfloat v = splat(vl[l * A + k + i]);
        for (int q = 0; q < NV; ++q) acc[i][q] += v * p[q];
      }
    }
    for (int i = 0; i < TILE; ++i)
      for (int q = 0; q < NV; ++q) store(w.outT.data() + (k + i) * BLOCK + q * VL, acc[i][q] / colsum[q]);
  }
  for (int64_t j = 0; j < count; ++j) {
    T* dst = tok_out + j * out_stride;
    for (int k = 0; k < A; ++k) dst[k] = static_cast<T>(w.outT[k * BLOCK + j]);
  }
}

// The latents read the block's tokens: each row's softmax share, merged online into `part`.
template <int A>
void latent_side(const float* S, Work& w, int64_t L, const Partial& part) {
  constexpr int AV = A / VL;  // vectors per latent row of values
  vfloat valid[NV];
  for (int q = 0; q < NV; ++q) valid[q] = load(w.valid.data() + q * VL);
  for (int64_t l = 0; l < L; l += TILE) {
    float rescale[TILE];
    for (int i = 0; i < TILE; ++i) {
      const float* s = S + (l + i) * BLOCK;
      vfloat m = splat(LOWEST);
      for (int q = 0; q < NV; ++q) m = vmax(m, valid[q] > 0.0f ? load(s + q * VL) : splat(LOWEST));
      const float peak = std::max(part.peak[l + i], hmax(m));
      rescale[i] = exp_scalar(part.peak[l + i] - peak);
      vfloat sum = splat(0.0f);
      for (int q = 0; q < NV; ++q) {
        const vfloat e = exp_nonpositive(load(s + q * VL) - peak) * valid[q];
        store(w.P.data() + (l + i) * BLOCK + q * VL, e);
        sum += e;
      }
      part.peak[l + i] = peak;
      part.total[l + i] = part.total[l + i] * rescale[i] + hsum(sum);
    }
    vfloat acc[TILE][AV];
    for (int i = 0; i < TILE; ++i)
      for (int q = 0; q < AV; ++q) acc[i][q] = load(part.acc + (l + i) * A + q * VL) * rescale[i];
    for (int64_t j = 0; j < BLOCK; ++j) {
      vfloat v[AV];
      for (int q = 0; q < AV; ++q) v[q] = load(w.vtb.data() + j * A + q * VL);
      for (int i = 0; i < TILE; ++i) {
        const vfloat p = splat(w.P[(l + i) * BLOCK + j]);
        for (int q = 0; q < AV; ++q) acc[i][q] += p * v[q];
      }
    }
    for (int i = 0; i < TILE; ++i)
      for (int q = 0; q < AV; ++q) store(part.acc + (l + i) * A + q * VL, acc[i][q]);
  }
}

// The token block [t0, t0 + count) of one (b, h): both directions from one S block.
template <int A, typename T>
void block_step(const float* rl, const float* vl, const Heads<T>& rt, const Heads<T>& vt,
                const bool* mask, T* tok_out, int64_t out_stride, int64_t b, int64_t h,
                int64_t t0, int64_t count, int64_t L, float scale, const Partial& part, Work& w) {
  for (int64_t j = 0; j < BLOCK; ++j) {
    const bool real = j < count;
    w.valid[j] = real && (mask == nullptr || mask[t0 + j]) ? 1.0f : 0.0f;
    const T* r = rt.row(b, h, real ? t0 + j : t0);
    const T* v = vt.row(b, h, real ? t0 + j : t0);
    for (int k = 0; k < A; ++k) {
      w.rtT[k * BLOCK + j] = real ? to_float(r[k]) * scale : 0.0f;
      w.vtb[j * A + k] = real ? to_float(v[k]) : 0.0f;
    }
  }
  similarity<A>(rl, w.rtT.data(), w.S.data(), L);
  token_side<A, T>(w.S.data(), vl, w, L, count, tok_out + t0 * out_stride, out_stride);
  latent_side<A>(w.S.data(), w, L, part);
}

// The latents' reads: each (b, h)'s group partials merged, normalised, written to [B, L, H * A].
template <int A, typename T>
void merge_groups(const std::vector<float>& peaks, const std::vector<float>& totals,
                  const std::vector<float>& accs, int64_t BH, int64_t H, int64_t groups, int64_t L,
                  T* lat) {
  for (int64_t bh = 0; bh < BH; ++bh) {
    const int64_t b = bh / H, h = bh % H;
    for (int64_t l = 0; l < L; ++l) {
      float peak = LOWEST, total = 0.0f, acc[A] = {};
      for (int64_t g = 0; g < groups; ++g) peak = std::max(peak, peaks[(bh * groups + g) * L + l]);
      for (int64_t g = 0; g < groups; ++g) {
        const int64_t at = (bh * groups + g) * L + l;
        const float rescale = exp_scalar(peaks[at] - peak);
        total += totals[at] * rescale;
        for (int k = 0; k < A; ++k) acc[k] += accs[at * A + k] * rescale;
      }
      // No valid token at all: total is 0 and the row is NaN, as for a fully masked softmax.
      T* dst = lat + (b * L + l) * H * A + h * A;
      for (int k = 0; k < A; ++k) dst[k] = static_cast<T>(acc[k] / total);
    }
  }
}

template <int A, typename T>
void run(const at::Tensor& r_lat, const at::Tensor& v_lat, const at::Tensor& r_tok,
         const at::Tensor& v_tok, const c10::optional<at::Tensor>& token_mask, double scale,
         at::Tensor& lat_out, at::Tensor& tok_out, int64_t groups) {
  const int64_t B = r_tok.size(0), H = r_tok.size(1), N = r_tok.size(2), L = r_lat.size(2);
  const int64_t blocks = (N + BLOCK - 1) / BLOCK;
  groups = std::max<int64_t>(1, std::min(groups, blocks));
  const int64_t group_tokens = (blocks + groups - 1) / groups * BLOCK;
  const auto rl = heads_of<T>(r_lat), vl = heads_of<T>(v_lat);
  const auto rt = heads_of<T>(r_tok), vt = heads_of<T>(v_tok);
  const bool* mask = token_mask ? token_mask->data_ptr<bool>() : nullptr;
  const int64_t mask_sb = token_mask ? token_mask->stride(0) : 0;
  // Per (b, h, group) task: peak [L], total [L], acc [L, A].
  const int64_t tasks = B * H * groups;
  std::vector<float> peaks(tasks * L, LOWEST), totals(tasks * L, 0.0f), accs(tasks * L * A, 0.0f);
  T* tok = tok_out.data_ptr<T>();  // [B, N, H * A]
  at::parallel_for(0, tasks, 1, [&](int64_t begin, int64_t end) {
    Work w(L, A);
    std::vector<float> lat_refs(L * A), lat_vals(L * A);
    for (int64_t task = begin; task < end; ++task) {
      const int64_t b = task / (H * groups), h = (task / groups) % H, g = task % groups;
      for (int64_t l = 0; l < L; ++l)
        for (int k = 0; k < A; ++k) {
          lat_refs[l * A + k] = to_float(rl.row(b, h, l)[k]);
          lat_vals[l * A + k] = to_float(vl.row(b, h, l)[k]);
        }
      const Partial part{&peaks[task * L], &totals[task * L], &accs[task * L * A]};
      const int64_t last = std::min(N, (g + 1) * group_tokens);
      for (int64_t t0 = g * group_tokens; t0 < last; t0 += BLOCK)
        block_step<A, T>(lat_refs.data(), lat_vals.data(), rt, vt,
                         mask ? mask + b * mask_sb : nullptr, tok + b * N * H * A + h * A, H * A,
                         b, h, t0, std::min(BLOCK, last - t0), L, static_cast<float>(scale), part,
                         w);
    }
  });
  merge_groups<A, T>(peaks, totals, accs, B * H, H, groups, L, lat_out.data_ptr<T>());
}

template <typename T>
using Runner = void (*)(const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
                        const c10::optional<at::Tensor>&, double, at::Tensor&, at::Tensor&, int64_t);

template <typename T>
Runner<T> runner_for(int64_t head_dims) {
  switch (head_dims) {
    case 16: return &run<16, T>;
    case 32: return &run<32, T>;
    case 64: return &run<64, T>;
    default: return nullptr;
  }
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
  TORCH_CHECK(L % TILE == 0, "bidir_attention: the number of latents must be a multiple of 4");
  auto lat_out = at::empty({B, L, H * a}, r_tok.options());
  auto tok_out = at::empty({B, N, H * a}, r_tok.options());
  if (r_tok.scalar_type() == at::kFloat) {
    auto fn = runner_for<float>(a);
    TORCH_CHECK(fn, "bidir_attention: head width must be 16, 32 or 64");
    fn(r_lat, v_lat, r_tok, v_tok, token_mask, scale, lat_out, tok_out, groups);
  } else {
    TORCH_CHECK(r_tok.scalar_type() == at::kBFloat16, "bidir_attention: fp32 or bf16 only");
    auto fn = runner_for<c10::BFloat16>(a);
    TORCH_CHECK(fn, "bidir_attention: head width must be 16, 32 or 64");
    fn(r_lat, v_lat, r_tok, v_tok, token_mask, scale, lat_out, tok_out, groups);
  }
  return {lat_out, tok_out};
}

}  // namespace

TORCH_LIBRARY(mmbixt_bidir, m) {
  m.def("bidir_attention(Tensor r_lat, Tensor v_lat, Tensor r_tok, Tensor v_tok, Tensor? token_mask, "
        "float scale, int groups) -> Tensor[]");
  m.impl("bidir_attention", c10::DispatchKey::CPU, &bidir_attention);
}
