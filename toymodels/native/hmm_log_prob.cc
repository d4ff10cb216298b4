// log P(x_1..x_L) of an edge-emitting HMM for a batch of token sequences: an XLA FFI kernel for the CPU.
//
// The filter of toymodels/processes/hmm.py, u <- u T[x_t] per token, in one of three forms (`step`):
//   kEmitThenMove  T[x] = diag(E[x]) A:  u <- (u * E[x]) A
//   kMoveThenEmit  T[x] = A diag(E[x]):  u <- (u A) * E[x]
//   kGeneral       T[x] as given:        u <- u T[x]
// The factorised forms run as a small matrix product with A held in cache for a group of sequences; XLA
// ops must first gather each sequence's emission row into a new array, which costs as much as the
// product itself at S = 32. The groups are shared out over XLA's CPU thread pool.
//
// Scaling: after each token u is multiplied by the power of two 2^-e that brings its mass into [1, 2),
// and the exponents are summed; log P(x) = log(final mass) + (sum of e) log 2. A power of two scales
// exactly, so the only rounding is the product's, and every entry stays at least its value in the
// normalised filter (so no state underflows that the normalised filter keeps); subnormal numbers are
// kept, not flushed to zero as in XLA's own CPU code (see KeepSubnormals). An impossible token
// (an id outside [0, V), or mass 0 or NaN) makes the sequence -inf, as in the XLA filter.
//
// Operands (leading dimensions of a vmapped call are folded into N; the state axis is padded with zeros
// to P, a whole number of vectors): emissions [N, V, P] (E; unused by kGeneral), matrices [N, K, S, P]
// (A with K = 1, or T with K = V), initial [N, P], tokens [N, B, L] int32  ->  log_prob [N, B].

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <vector>

#if defined(__x86_64__) || defined(__i386__)
#include <xmmintrin.h>
#endif

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

enum Step : int32_t { kEmitThenMove = 0, kMoveThenEmit = 1, kGeneral = 2 };

// Sequences filtered side by side: their products are independent, so the CPU overlaps them, and in
// the factorised forms each row of A loaded from cache serves all of them. 12 rows of two accumulator
// vectors use 24 of the 32 vector registers of AVX-512 (measured: 8 and 16 were slower at S = 32).
constexpr int kGroup = 12;
constexpr int kVectorBytes = 64;

// GCC and Clang vector extensions: each operation compiles to the widest instructions the CPU has.
template <typename T>
struct VectorOf;
template <>
struct VectorOf<float> {
  typedef float type __attribute__((vector_size(kVectorBytes)));
};
template <>
struct VectorOf<double> {
  typedef double type __attribute__((vector_size(kVectorBytes)));
};
template <typename T>
using Vec = typename VectorOf<T>::type;

template <typename T>
constexpr int64_t kLanes = kVectorBytes / sizeof(T);

template <typename T>
Vec<T> Load(const T* p) {
  Vec<T> v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}

template <typename T>
void Store(T* p, Vec<T> v) {
  std::memcpy(p, &v, sizeof(v));
}

// The sum of v's lanes, by a butterfly of swaps (no lane is read back from memory).
inline float SumOf(Vec<float> v) {
  v += __builtin_shufflevector(v, v, 8, 9, 10, 11, 12, 13, 14, 15, 0, 1, 2, 3, 4, 5, 6, 7);
  v += __builtin_shufflevector(v, v, 4, 5, 6, 7, 0, 1, 2, 3, 12, 13, 14, 15, 8, 9, 10, 11);
  v += __builtin_shufflevector(v, v, 2, 3, 0, 1, 6, 7, 4, 5, 10, 11, 8, 9, 14, 15, 12, 13);
  return (v + __builtin_shufflevector(v, v, 1, 0, 3, 2, 5, 4, 7, 6, 9, 8, 11, 10, 13, 12, 15, 14))[0];
}

inline double SumOf(Vec<double> v) {
  v += __builtin_shufflevector(v, v, 4, 5, 6, 7, 0, 1, 2, 3);
  v += __builtin_shufflevector(v, v, 2, 3, 0, 1, 6, 7, 4, 5);
  return (v + __builtin_shufflevector(v, v, 1, 0, 3, 2, 5, 4, 7, 6))[0];
}

// out[g, column + c lanes] = sum_i in[g, i] M_g[i, same columns] for the group's kGroup rows: the
// accumulators stay in registers for the whole sum over i. M_g = matrices[g] (matrices[0] for every row
// when kShared).
template <typename T, int kChunks, bool kShared>
inline void ProductColumns(const T* const* matrices, const T* in, int64_t states, int64_t padded,
                           int64_t column, T* out) {
  Vec<T> sum[kGroup][kChunks] = {};
  for (int64_t i = 0; i < states; ++i) {
    if constexpr (kShared) {
      Vec<T> row[kChunks];
      for (int c = 0; c < kChunks; ++c) row[c] = Load(matrices[0] + i * padded + column + c * kLanes<T>);
      for (int g = 0; g < kGroup; ++g) {
        const T weight = in[g * padded + i];
        for (int c = 0; c < kChunks; ++c) sum[g][c] += weight * row[c];
      }
    } else {
      for (int g = 0; g < kGroup; ++g) {
        const T weight = in[g * padded + i];
        const T* row = matrices[g] + i * padded + column;
        for (int c = 0; c < kChunks; ++c) sum[g][c] += weight * Load(row + c * kLanes<T>);
      }
    }
  }
  for (int g = 0; g < kGroup; ++g) {
    for (int c = 0; c < kChunks; ++c) Store(out + g * padded + column + c * kLanes<T>, sum[g][c]);
  }
}

template <typename T, bool kShared>
void Product(const T* const* matrices, const T* in, int64_t states, int64_t padded, T* out) {
  int64_t column = 0;
  for (; column + 2 * kLanes<T> <= padded; column += 2 * kLanes<T>) {
    ProductColumns<T, 2, kShared>(matrices, in, states, padded, column, out);
  }
  if (column < padded) ProductColumns<T, 1, kShared>(matrices, in, states, padded, column, out);
}

// IEEE-754 layout, to read and build powers of two without library calls.
template <typename T>
struct Binary;
template <>
struct Binary<float> {
  using Bits = uint32_t;
  static constexpr int kMantissaBits = 23, kBias = 127;
};
template <>
struct Binary<double> {
  using Bits = uint64_t;
  static constexpr int kMantissaBits = 52, kBias = 1023;
};

// The power of two 2^-e that brings a positive mass into [1, 2), as the product first * second: second
// is 1 unless the mass is subnormal, when 2^-e itself overflows and is applied in two exact halves.
template <typename T>
struct Normaliser {
  int64_t exponent;
  T first, second;
};

template <typename T>
Normaliser<T> NormaliserOf(T mass) {
  using Bits = typename Binary<T>::Bits;
  constexpr int kShift = Binary<T>::kMantissaBits, kBias = Binary<T>::kBias;
  Bits bits;
  std::memcpy(&bits, &mass, sizeof(bits));
  const int64_t field = static_cast<int64_t>(bits >> kShift);  // the sign bit is 0
  if (XLA_FFI_PREDICT_FALSE(field == 0)) {
    int e;
    std::frexp(mass, &e);  // mass = f 2^e with f in [0.5, 1)
    const int exponent = e - 1;
    return {exponent, std::ldexp(T(1), -(exponent / 2)), std::ldexp(T(1), -(exponent - exponent / 2))};
  }
  // A normal mass lies in [2^e, 2^(e+1)) with e = field - bias; 2^-e has the field 2 bias - field.
  const int64_t exponent = field - kBias;
  const Bits factor_bits = static_cast<Bits>(kBias - exponent) << kShift;
  T factor;
  std::memcpy(&factor, &factor_bits, sizeof(factor));
  return {exponent, factor, T(1)};
}

// XLA runs CPU code with subnormal numbers flushed to zero. An exact filter must not flush them (a
// probability of 1e-40 in float32 is not 0), so each thread of the kernel turns flushing off while it
// works and restores the caller's setting after.
class KeepSubnormals {
 public:
#if defined(__x86_64__) || defined(__i386__)
  static constexpr unsigned kFlushToZero = 0x8000, kDenormalsAreZero = 0x0040;  // MXCSR bits
  KeepSubnormals() : saved_(_mm_getcsr()) { _mm_setcsr(saved_ & ~(kFlushToZero | kDenormalsAreZero)); }
  ~KeepSubnormals() { _mm_setcsr(saved_); }

 private:
  unsigned saved_;
#elif defined(__aarch64__)
  static constexpr uint64_t kFlushToZero = uint64_t{1} << 24;  // FPCR.FZ
  KeepSubnormals() {
    asm volatile("mrs %0, fpcr" : "=r"(saved_));
    asm volatile("msr fpcr, %0" : : "r"(saved_ & ~kFlushToZero));
  }
  ~KeepSubnormals() { asm volatile("msr fpcr, %0" : : "r"(saved_)); }

 private:
  uint64_t saved_;
#endif
};

struct Shape {
  int64_t vocab, states, padded, batch, length;
};

// Filters up to kGroup sequences (`count` of them; the other rows of the group are zero). Per token:
// `scaled` holds each row's input to the product (its belief up to a power of two, times E[x_t] for
// kEmitThenMove), Product forms u in `next`, and one pass over u multiplies in E[x_t] (kMoveThenEmit),
// sums the mass, and writes the next token's input, scaled by the power of two that brings the mass into
// [1, 2).
template <typename T, Step kStep>
void FilterGroup(const T* emissions, const T* matrices, const T* initial, const int32_t* tokens,
                 int64_t count, const Shape& shape, T* scaled, T* next, T* out) {
  const int64_t padded = shape.padded, length = shape.length;
  const T* matrix_of[kGroup];
  const T* emission_of[kGroup];
  bool alive[kGroup];
  int64_t exponent[kGroup];
  T final_mass[kGroup];

  // A dead row's input is zero, so it costs no subnormal arithmetic and its product is never read.
  auto kill = [&](int g) {
    alive[g] = false;
    std::fill(scaled + g * padded, scaled + (g + 1) * padded, T(0));
  };
  // Reads row g's token t and writes its input to the product from `source` (a belief up to the factor
  // first * second); an id outside [0, V) kills the row.
  auto prepare = [&](int g, int64_t t, const T* source, T first, T second) {
    const int32_t token = g < count ? tokens[g * length + t] : -1;
    if (token < 0 || token >= shape.vocab) return kill(g);
    emission_of[g] = emissions + token * padded;
    if constexpr (kStep == kGeneral) matrix_of[g] = matrices + token * shape.states * padded;
    T* w = scaled + g * padded;
    for (int64_t c = 0; c < padded; c += kLanes<T>) {
      Vec<T> v = Load(source + c) * first * second;
      if constexpr (kStep == kEmitThenMove) v *= Load(emission_of[g] + c);
      Store(w + c, v);
    }
  };

  Vec<T> initial_sum = {};
  for (int64_t c = 0; c < padded; c += kLanes<T>) initial_sum += Load(initial + c);
  for (int g = 0; g < kGroup; ++g) {
    alive[g] = true;
    exponent[g] = 0;
    matrix_of[g] = matrices;
    emission_of[g] = emissions;
    final_mass[g] = SumOf(initial_sum);  // the answer for length 0
    if (g >= count) {
      kill(g);
    } else if (length > 0) {
      prepare(g, 0, initial, T(1), T(1));
    }
  }
  for (int64_t t = 0; t < length; ++t) {
    Product<T, kStep != kGeneral>(matrix_of, scaled, shape.states, padded, next);
    for (int g = 0; g < count; ++g) {
      if (!alive[g]) continue;
      T* u = next + g * padded;
      Vec<T> sum = {};
      for (int64_t c = 0; c < padded; c += kLanes<T>) {
        Vec<T> v = Load(u + c);
        if constexpr (kStep == kMoveThenEmit) {
          v *= Load(emission_of[g] + c);
          Store(u + c, v);
        }
        sum += v;
      }
      const T mass = SumOf(sum);
      if (!(mass > 0)) {  // also catches NaN
        kill(g);
        continue;
      }
      const Normaliser<T> normaliser = NormaliserOf(mass);
      exponent[g] += normaliser.exponent;
      if (t + 1 < length) {
        prepare(g, t + 1, u, normaliser.first, normaliser.second);
      } else {
        final_mass[g] = mass * normaliser.first * normaliser.second;
      }
    }
  }
  for (int g = 0; g < count; ++g) {
    out[g] = alive[g] ? static_cast<T>(std::log(static_cast<double>(final_mass[g])) + exponent[g] * std::log(2.0))
                      : -std::numeric_limits<T>::infinity();
  }
}

ffi::Future Failed(const char* message) {
  ffi::Promise promise;
  ffi::Future future(promise);
  promise.SetError(ffi::Error::InvalidArgument(message));
  return future;
}

// Shares the groups of sequences out over XLA's CPU thread pool; the calling thread works too. Returns
// a future, so that no thread blocks waiting for pool threads (which may be busy with other work).
template <ffi::DataType kType>
ffi::Future LogProb(ffi::ThreadPool pool, ffi::Buffer<kType> emissions, ffi::Buffer<kType> matrices,
                    ffi::Buffer<kType> initial, ffi::Buffer<ffi::S32> tokens, ffi::ResultBuffer<kType> log_prob,
                    int32_t step) {
  using T = ffi::NativeType<kType>;
  const auto emission_dims = emissions.dimensions();
  const auto matrix_dims = matrices.dimensions();
  const auto token_dims = tokens.dimensions();
  if (emission_dims.size() < 2 || matrix_dims.size() < 3 || token_dims.size() < 2) {
    return Failed("hmm_log_prob: expected emissions [..., V, P], matrices [..., K, S, P], tokens [..., B, L]");
  }
  Shape shape;
  shape.vocab = emission_dims[emission_dims.size() - 2];
  shape.padded = emission_dims[emission_dims.size() - 1];
  shape.states = matrix_dims[matrix_dims.size() - 2];
  shape.batch = token_dims[token_dims.size() - 2];
  shape.length = token_dims[token_dims.size() - 1];
  const int64_t num_matrices = step == kGeneral ? shape.vocab : 1;
  if (step < kEmitThenMove || step > kGeneral || shape.padded % kLanes<T> != 0 || shape.states > shape.padded ||
      shape.vocab == 0 || matrix_dims[matrix_dims.size() - 3] != num_matrices ||
      matrix_dims[matrix_dims.size() - 1] != shape.padded) {
    return Failed("hmm_log_prob: inconsistent shapes or step (P must be a multiple of the vector width)");
  }
  const int64_t emissions_size = shape.vocab * shape.padded;
  const int64_t matrices_size = num_matrices * shape.states * shape.padded;
  const int64_t processes = emissions.element_count() / emissions_size;
  if (matrices.element_count() != processes * matrices_size || initial.element_count() != processes * shape.padded ||
      tokens.element_count() != processes * shape.batch * shape.length) {
    return Failed("hmm_log_prob: the leading dimensions of the operands differ");
  }
  const auto filter = step == kEmitThenMove   ? FilterGroup<T, kEmitThenMove>
                      : step == kMoveThenEmit ? FilterGroup<T, kMoveThenEmit>
                                              : FilterGroup<T, kGeneral>;
  const int64_t groups_per_process = (shape.batch + kGroup - 1) / kGroup;
  const int64_t groups = processes * groups_per_process;
  const int64_t workers = std::max<int64_t>(1, std::min<int64_t>(groups, pool.num_threads()));
  ffi::CountDownPromise done(workers);
  ffi::Future future(done);
  auto next_group = std::make_shared<std::atomic<int64_t>>(0);
  const T *emission_data = emissions.typed_data(), *matrix_data = matrices.typed_data();
  const T* initial_data = initial.typed_data();
  const int32_t* token_data = tokens.typed_data();
  T* out = log_prob->typed_data();
  auto work = [=]() mutable {
    const KeepSubnormals keep_subnormals;
    std::vector<T> scaled(kGroup * shape.padded), next(kGroup * shape.padded);
    for (int64_t group; (group = next_group->fetch_add(1)) < groups;) {
      const int64_t n = group / groups_per_process, b = (group % groups_per_process) * kGroup;
      filter(emission_data + n * emissions_size, matrix_data + n * matrices_size, initial_data + n * shape.padded,
             token_data + (n * shape.batch + b) * shape.length, std::min<int64_t>(kGroup, shape.batch - b), shape,
             scaled.data(), next.data(), out + n * shape.batch + b);
    }
    done.CountDown();
  };
  for (int64_t w = 1; w < workers; ++w) pool.Schedule(decltype(work)(work));  // each task owns a copy
  work();
  return future;
}

}  // namespace

#define TOYMODELS_HMM_LOG_PROB(name, type)                        \
  XLA_FFI_DEFINE_HANDLER_SYMBOL(name, LogProb<type>,              \
                                ffi::Ffi::Bind()                  \
                                    .Ctx<ffi::ThreadPool>()       \
                                    .Arg<ffi::Buffer<type>>()     \
                                    .Arg<ffi::Buffer<type>>()     \
                                    .Arg<ffi::Buffer<type>>()     \
                                    .Arg<ffi::Buffer<ffi::S32>>() \
                                    .Ret<ffi::Buffer<type>>()     \
                                    .Attr<int32_t>("step"));

TOYMODELS_HMM_LOG_PROB(HmmLogProbF32, ffi::F32)
TOYMODELS_HMM_LOG_PROB(HmmLogProbF64, ffi::F64)
