// Causal softmax attention, forward and backward: an XLA FFI kernel for the CPU.
//
// For each sequence n and head h: o_t = sum_{j <= t} p_tj v_j with p_tj = softmax_j(s_tj),
// s_tj = (c q_t) . k_j and c = 1/sqrt(K), the attention of toymodels/transformer.py's full pass. Why a
// kernel: XLA's CPU code runs this as [B, H, L, L] score tensors, transposes of q, k and v, and batched
// products of L x K by K x L matrices (K = 16 in the benchmark model); measured, that third of a training
// step went to 14% of its FLOPs. Here one (sequence, head) pair at a time is copied into buffers that
// stay in cache, keys and values also transposed so that a score row is a sum of vectors over the key
// axis, only the causal half j <= t is computed, and the pairs are shared out over XLA's CPU thread
// pool. The forward pass keeps each row's log-sum-exp; the backward pass recomputes p from it (as flash
// attention does). The kernel reads q, k and v from the fused projection's output and writes their
// gradients into one array of the same layout, so XLA need neither slice it nor assemble the gradient.
//
// Operands (leading dimensions, a vmapped call's among them, are folded into N):
//   forward   qkv [N, L, 3, H, K]                                  ->  o [N, L, H, K], lse [N, H, L]
//   backward  qkv [N, L, 3, H, K], o [N, L, H, K], lse [N, H, L], do [N, L, H, K]  ->  dqkv [N, L, 3, H, K]
// float32 only. Masked pairs (j > t) are exact zeros; exp is evaluated by a degree-6 polynomial on a
// reduced argument (relative error about 1e-7) and underflows to 0 below -87.3, as float32's exp does.

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <vector>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

constexpr int64_t kLanes = 8;  // one AVX2 register of floats; GCC splits or merges for other widths
typedef float V8 __attribute__((vector_size(kLanes * sizeof(float))));
typedef int32_t I8 __attribute__((vector_size(kLanes * sizeof(int32_t))));

inline V8 Load(const float* p) {
  V8 v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}

inline void Store(float* p, V8 v) { std::memcpy(p, &v, sizeof(v)); }

inline V8 Splat(float x) { return V8{} + x; }

inline float MaxOf(V8 v) {
  float m = v[0];
  for (int i = 1; i < kLanes; ++i) m = std::max(m, v[i]);
  return m;
}

inline float SumOf(V8 v) {
  float s = 0;
  for (int i = 0; i < kLanes; ++i) s += v[i];
  return s;
}

// exp(x) lane by lane: x = n log 2 + r with |r| <= log(2)/2, exp(r) by the Cephes polynomial, 2^n by
// building the exponent bits. Below -87.3 (where float32 turns subnormal) the result is 0; NaN stays NaN.
inline V8 Exp(V8 x) {
  const V8 low = Splat(-87.33654f);
  const I8 underflow = x < low;
  x = underflow ? low : x;
  V8 scaled = x * 1.44269504088896341f + 0.5f;
  I8 n = __builtin_convertvector(scaled, I8);  // truncates towards zero: floor needs one correction
  const V8 truncated = __builtin_convertvector(n, V8);
  n -= (truncated > scaled) ? I8{} + 1 : I8{};
  const V8 whole = __builtin_convertvector(n, V8);
  const V8 r = x - whole * 0.693359375f - whole * -2.12194440e-4f;
  V8 y = Splat(1.9875691500e-4f);
  y = y * r + 1.3981999507e-3f;
  y = y * r + 8.3334519073e-3f;
  y = y * r + 4.1665795894e-2f;
  y = y * r + 1.6666665459e-1f;
  y = y * r + 5.0000001201e-1f;
  y = y * (r * r) + r + 1.0f;
  const I8 bits = (n + 127) << 23;
  V8 power;
  std::memcpy(&power, &bits, sizeof(power));
  return underflow ? V8{} : y * power;
}

struct Dims {
  int64_t length, heads, head_dim;
  int64_t kp;  // head_dim rounded up to whole vectors
  int64_t lp;  // length rounded up to whole groups of kGroup vectors
  float scale;
};

// Independent accumulators per loop: a chain of dependent vector FMAs would wait on each one's latency
// (about 4 cycles), so every inner loop keeps kGroup chains in flight.
constexpr int64_t kGroup = 4;

// Buffers of one worker, reused for every (sequence, head) pair it takes; rows are [lp][kp], columns
// [kp][lp], square ones [lp][lp]. Padding (rows t >= L, columns c >= K) is zero once and for all, as
// each pair writes only t < L and c < K; the loops below read padding and rely on it being zero.
struct Buffers {
  Buffers(const Dims& d, bool backward)
      : q(d.lp * d.kp), k(d.lp * d.kp), v(d.lp * d.kp), o(d.lp * d.kp), d_o(d.lp * d.kp), out(d.lp * d.kp),
        k_t(d.kp * d.lp), v_t(d.kp * d.lp), p((backward ? d.lp : 1) * d.lp), ds((backward ? d.lp : 1) * d.lp),
        scaled(d.kp) {}
  std::vector<float> q, k, v, o, d_o, out, k_t, v_t;
  // Probabilities and score gradients, row t at t * lp: all rows in the backward pass (8 L^2 bytes per
  // worker, 2 MB at L = 512), one row in the forward pass.
  std::vector<float> p, ds;
  std::vector<float> scaled;  // c q_t
};

// Where head h's rows lie in an operand: row t at data + t * stride + offset, K floats.
struct Rows {
  int64_t stride, offset;
};

inline Rows QkvRows(const Dims& d, int64_t part, int64_t h) {  // part 0, 1, 2: q, k, v of [L, 3, H, K]
  return {3 * d.heads * d.head_dim, (part * d.heads + h) * d.head_dim};
}

inline Rows HeadRows(const Dims& d, int64_t h) { return {d.heads * d.head_dim, h * d.head_dim}; }  // [L, H, K]

// Head rows of x into rows [lp][kp]; with `columns` also into [kp][lp].
void Gather(const float* x, Rows where, const Dims& d, float* rows, float* columns) {
  for (int64_t t = 0; t < d.length; ++t) {
    const float* source = x + t * where.stride + where.offset;
    std::memcpy(rows + t * d.kp, source, d.head_dim * sizeof(float));
    if (columns != nullptr) {
      for (int64_t c = 0; c < d.head_dim; ++c) columns[c * d.lp + t] = source[c];
    }
  }
}

void Scatter(const float* rows, const Dims& d, Rows where, float* x) {
  for (int64_t t = 0; t < d.length; ++t) {
    std::memcpy(x + t * where.stride + where.offset, rows + t * d.kp, d.head_dim * sizeof(float));
  }
}

// Vectors jb = 0 .. blocks - 1 (a whole number of groups) of the row a [K] times columns [kp][lp].
inline void RowTimesColumns(const float* a, const float* columns, const Dims& d, int64_t blocks, float* out) {
  for (int64_t jb = 0; jb < blocks; jb += kGroup) {
    V8 acc[kGroup] = {};
    for (int64_t c = 0; c < d.head_dim; ++c) {
      const float* column = columns + c * d.lp + jb * kLanes;
      for (int64_t g = 0; g < kGroup; ++g) acc[g] += a[c] * Load(column + g * kLanes);
    }
    for (int64_t g = 0; g < kGroup; ++g) Store(out + (jb + g) * kLanes, acc[g]);
  }
}

// Lanes of vector jb that are keys after query t (j > t) become `fill`.
inline V8 MaskAfter(V8 x, int64_t jb, int64_t t, float fill) {
  const I8 lane = {0, 1, 2, 3, 4, 5, 6, 7};
  const I8 future = (lane + static_cast<int32_t>(jb * kLanes)) > static_cast<int32_t>(t);
  return future ? Splat(fill) : x;
}

// out[c] = sum over j in [first, last) of weights[j * stride] * rows[j][c], c < kp; last - first is a
// whole number of groups, so rows and weights must exist up to `last`, the extra weights zero. Two
// vectors of each row per pass, so that each weight is loaded once for both.
inline void WeightedRows(const float* weights, int64_t stride, const float* rows, const Dims& d, int64_t first,
                         int64_t last, float* out) {
  int64_t c = 0;
  for (; c + 2 * kLanes <= d.kp; c += 2 * kLanes) {
    V8 low[kGroup] = {}, high[kGroup] = {};
    for (int64_t j = first; j < last; j += kGroup) {
      for (int64_t g = 0; g < kGroup; ++g) {
        const float w = weights[(j + g) * stride];
        const float* row = rows + (j + g) * d.kp + c;
        low[g] += w * Load(row);
        high[g] += w * Load(row + kLanes);
      }
    }
    Store(out + c, (low[0] + low[1]) + (low[2] + low[3]));
    Store(out + c + kLanes, (high[0] + high[1]) + (high[2] + high[3]));
  }
  for (; c < d.kp; c += kLanes) {
    V8 acc[kGroup] = {};
    for (int64_t j = first; j < last; j += kGroup) {
      for (int64_t g = 0; g < kGroup; ++g) acc[g] += weights[(j + g) * stride] * Load(rows + (j + g) * d.kp + c);
    }
    Store(out + c, (acc[0] + acc[1]) + (acc[2] + acc[3]));
  }
}

inline int64_t RoundUp(int64_t n) { return (n + kGroup - 1) / kGroup * kGroup; }  // to a whole group

inline int64_t Blocks(int64_t t) { return (t / (kLanes * kGroup) + 1) * kGroup; }  // vectors covering j <= t

void ForwardPair(const float* qkv, float* o, float* lse, const Dims& d, int64_t h, Buffers& b) {
  Gather(qkv, QkvRows(d, 0, h), d, b.q.data(), nullptr);
  Gather(qkv, QkvRows(d, 1, h), d, b.k.data(), b.k_t.data());
  Gather(qkv, QkvRows(d, 2, h), d, b.v.data(), nullptr);
  float *scaled = b.scaled.data(), *p = b.p.data();
  for (int64_t t = 0; t < d.length; ++t) {
    const float* q_t = b.q.data() + t * d.kp;
    for (int64_t c = 0; c < d.head_dim; ++c) scaled[c] = q_t[c] * d.scale;
    const int64_t blocks = Blocks(t);
    RowTimesColumns(scaled, b.k_t.data(), d, blocks, p);
    V8 top = Splat(-std::numeric_limits<float>::infinity());
    for (int64_t jb = 0; jb < blocks; ++jb) {
      const V8 s = MaskAfter(Load(p + jb * kLanes), jb, t, -std::numeric_limits<float>::infinity());
      Store(p + jb * kLanes, s);
      top = top > s ? top : s;
    }
    const float m = MaxOf(top);
    V8 total = {};
    for (int64_t jb = 0; jb < blocks; ++jb) {
      const V8 e = Exp(Load(p + jb * kLanes) - m);
      Store(p + jb * kLanes, e);
      total += e;
    }
    const float sum = SumOf(total);
    float* o_t = b.out.data() + t * d.kp;
    WeightedRows(p, 1, b.v.data(), d, 0, RoundUp(t + 1), o_t);
    for (int64_t c = 0; c < d.head_dim; ++c) o_t[c] /= sum;
    lse[h * d.length + t] = m + std::log(sum);
  }
  Scatter(b.out.data(), d, HeadRows(d, h), o);
}

void BackwardPair(const float* qkv, const float* o, const float* lse, const float* d_o, float* dqkv, const Dims& d,
                  int64_t h, Buffers& b) {
  Gather(qkv, QkvRows(d, 0, h), d, b.q.data(), nullptr);
  Gather(qkv, QkvRows(d, 1, h), d, b.k.data(), b.k_t.data());
  Gather(qkv, QkvRows(d, 2, h), d, b.v.data(), b.v_t.data());
  Gather(o, HeadRows(d, h), d, b.o.data(), nullptr);
  Gather(d_o, HeadRows(d, h), d, b.d_o.data(), nullptr);
  float* scaled = b.scaled.data();
  // Rows t: probabilities p_tj, score gradients ds_tj = c p_tj (do_t . v_j - do_t . o_t), and dq_t.
  for (int64_t t = 0; t < d.length; ++t) {
    const float *q_t = b.q.data() + t * d.kp, *o_t = b.o.data() + t * d.kp, *do_t = b.d_o.data() + t * d.kp;
    V8 products = {};
    for (int64_t c = 0; c < d.kp; c += kLanes) products += Load(do_t + c) * Load(o_t + c);
    const float delta = SumOf(products);  // do_t . o_t = sum_j p_tj (do_t . v_j)
    for (int64_t c = 0; c < d.head_dim; ++c) scaled[c] = q_t[c] * d.scale;
    const float lse_t = lse[h * d.length + t];
    const int64_t blocks = Blocks(t);
    float *p = b.p.data() + t * d.lp, *ds = b.ds.data() + t * d.lp;
    RowTimesColumns(scaled, b.k_t.data(), d, blocks, p);
    RowTimesColumns(do_t, b.v_t.data(), d, blocks, ds);
    for (int64_t jb = 0; jb < blocks; ++jb) {
      const V8 p_j = MaskAfter(Exp(Load(p + jb * kLanes) - lse_t), jb, t, 0.0f);
      Store(p + jb * kLanes, p_j);
      Store(ds + jb * kLanes, p_j * (Load(ds + jb * kLanes) - delta) * d.scale);
    }
    WeightedRows(ds, 1, b.k.data(), d, 0, RoundUp(t + 1), b.out.data() + t * d.kp);
  }
  Scatter(b.out.data(), d, QkvRows(d, 0, h), dqkv);
  // Columns j: dk_j = sum_{t >= j} ds_tj q_t and dv_j = sum_{t >= j} p_tj do_t, into the rows of k and v
  // (no longer needed). The sums start at the group holding j: rows t < j there have p_tj = ds_tj = 0,
  // since the vectors of row t that were computed reach past j (j - t < kGroup <= kLanes * kGroup).
  for (int64_t j = 0; j < d.length; ++j) {
    const int64_t first = j / kGroup * kGroup, last = RoundUp(d.length);
    WeightedRows(b.ds.data() + j, d.lp, b.q.data(), d, first, last, b.k.data() + j * d.kp);
    WeightedRows(b.p.data() + j, d.lp, b.d_o.data(), d, first, last, b.v.data() + j * d.kp);
  }
  Scatter(b.k.data(), d, QkvRows(d, 1, h), dqkv);
  Scatter(b.v.data(), d, QkvRows(d, 2, h), dqkv);
}

ffi::Future Failed(const char* message) {
  ffi::Promise promise;
  ffi::Future future(promise);
  promise.SetError(ffi::Error::InvalidArgument(message));
  return future;
}

ffi::Future Done() {
  ffi::Promise promise;
  ffi::Future future(promise);
  promise.SetAvailable();
  return future;
}

// Dims of qkv [..., L, 3, H, K] and the number N of (flattened) leading entries; false if malformed.
template <typename Dimensions>
bool DimsOf(const Dimensions& dims, int64_t elements, Dims& d, int64_t& sequences) {
  const int64_t rank = dims.size();
  if (rank < 4 || dims[rank - 3] != 3) return false;
  d.length = dims[rank - 4];
  d.heads = dims[rank - 2];
  d.head_dim = dims[rank - 1];
  d.kp = (d.head_dim + kLanes - 1) / kLanes * kLanes;
  d.lp = (d.length + kLanes * kGroup - 1) / (kLanes * kGroup) * (kLanes * kGroup);
  d.scale = 1.0f / std::sqrt(static_cast<float>(d.head_dim));
  const int64_t per_sequence = d.length * 3 * d.heads * d.head_dim;
  sequences = per_sequence == 0 ? 0 : elements / per_sequence;
  return true;
}

// Runs pair(n, h, buffers) for every sequence n and head h, shared out over the pool; the future is
// ready when all are done.
template <typename Pair>
ffi::Future ForEachPair(ffi::ThreadPool pool, const Dims& d, int64_t sequences, bool backward, Pair pair) {
  const int64_t pairs = sequences * d.heads;
  if (pairs == 0 || d.length == 0 || d.head_dim == 0) return Done();
  const int64_t workers = std::max<int64_t>(1, std::min<int64_t>(pairs, pool.num_threads()));
  ffi::CountDownPromise done(workers);
  ffi::Future future(done);
  auto next = std::make_shared<std::atomic<int64_t>>(0);
  auto work = [=]() mutable {
    Buffers buffers(d, backward);
    for (int64_t index; (index = next->fetch_add(1)) < pairs;) pair(index / d.heads, index % d.heads, buffers);
    done.CountDown();
  };
  for (int64_t w = 1; w < workers; ++w) pool.Schedule(decltype(work)(work));  // each task owns a copy
  work();
  return future;
}

ffi::Future Forward(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> qkv, ffi::ResultBuffer<ffi::F32> o,
                    ffi::ResultBuffer<ffi::F32> lse) {
  Dims d;
  int64_t sequences;
  const int64_t size = qkv.element_count();
  if (!DimsOf(qkv.dimensions(), size, d, sequences) || o->element_count() * 3 != size ||
      lse->element_count() != sequences * d.heads * d.length) {
    return Failed("causal_attention: expected qkv [..., L, 3, H, K], o [..., L, H, K] and lse [..., H, L]");
  }
  const float* qkv_data = qkv.typed_data();
  float *o_data = o->typed_data(), *lse_data = lse->typed_data();
  const int64_t rows = d.length * d.heads * d.head_dim, scores = d.heads * d.length;
  return ForEachPair(pool, d, sequences, false, [=](int64_t n, int64_t h, Buffers& buffers) {
    ForwardPair(qkv_data + 3 * n * rows, o_data + n * rows, lse_data + n * scores, d, h, buffers);
  });
}

ffi::Future Backward(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> qkv, ffi::Buffer<ffi::F32> o,
                     ffi::Buffer<ffi::F32> lse, ffi::Buffer<ffi::F32> d_o, ffi::ResultBuffer<ffi::F32> dqkv) {
  Dims d;
  int64_t sequences;
  const int64_t size = qkv.element_count();
  if (!DimsOf(qkv.dimensions(), size, d, sequences) || o.element_count() * 3 != size ||
      d_o.element_count() * 3 != size || dqkv->element_count() != size ||
      lse.element_count() != sequences * d.heads * d.length) {
    return Failed("causal_attention_backward: expected qkv [..., L, 3, H, K], o and do [..., L, H, K], "
                  "lse [..., H, L]");
  }
  const float *qkv_data = qkv.typed_data(), *o_data = o.typed_data(), *lse_data = lse.typed_data();
  const float* do_data = d_o.typed_data();
  float* dqkv_data = dqkv->typed_data();
  const int64_t rows = d.length * d.heads * d.head_dim, scores = d.heads * d.length;
  return ForEachPair(pool, d, sequences, true, [=](int64_t n, int64_t h, Buffers& buffers) {
    BackwardPair(qkv_data + 3 * n * rows, o_data + n * rows, lse_data + n * scores, do_data + n * rows,
                 dqkv_data + 3 * n * rows, d, h, buffers);
  });
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(CausalAttentionF32, Forward,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>());

XLA_FFI_DEFINE_HANDLER_SYMBOL(CausalAttentionBackwardF32, Backward,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>());
