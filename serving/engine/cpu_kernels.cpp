// The engine's CPU kernels, built into one library (`cpu_kernels.py`): decode and prompt attention over the paged KV
// cache, RMSNorm, the rotary embedding and the MLP's activation in one op each, and the grammar mask's application
// to the logits.
//
// Decode attention reads every row's blocks where they lie.
// The torch-only path (`GatheredSdpa`) copies each decoding row's blocks into one padded tensor before SDPA reads
// them again: on long contexts the copy and SDPA's per-block overhead for a single query are most of a decode
// step. This kernel walks each row's block table instead: for each row it scores every query head against every key
// of the row, takes the softmax and sums the values, reading each slot (the keys or values of all kv heads, one
// contiguous run) once. Per (row, kv head) tasks read each slot's cache lines twice, once per kv head: 1.5-1.8x
// slower on the tiny benchmark model's shapes (`python -m serving.bench.decode_attention`). Work is split over the
// intra-op threads by context length, so long and short rows balance.
//
// serving::paged_decode(q, key_cache, value_cache, block_tables, lengths, block_size, scale) -> out
//   q            [rows, heads, head_dim]   (any row and head strides; the last dimension contiguous)
//   key_cache    [slots, kv_heads * head_dim] contiguous, value_cache the same
//   block_tables [rows, max_blocks] int32: the blocks of each row, in order
//   lengths      [rows] int32: the keys each row attends to (positions 0 .. length - 1)
//   out          [rows, heads, head_dim] contiguous, q's dtype
// serving::paged_decode_lse(the same) -> (out, lse): also each row's and head's log-sum-exp of its scaled scores,
//   float32 [rows, heads], so that a cascade can merge this part with attention over keys read elsewhere.
//
// serving::paged_prefill(q, key_cache, value_cache, block_tables, starts, counts, block_size, scale, lanes=0) -> out
//   Prompt chunks' causal attention over the paged cache, their keys and values read in place: chunk c's queries
//   are rows counts[0] + ... + counts[c - 1] onwards of q, at positions starts[c] onwards, and query i of it sees
//   the keys at positions 0 .. starts[c] + i of its table (the chunk's own keys already written).
//   q            [tokens, heads, head_dim]  (any row and head strides; the last dimension contiguous)
//   block_tables [chunks, max_blocks] int32; starts, counts [chunks] int32
//   lanes        the vector width to run at: 0 for the machine's widest (16 floats with AVX-512, 8 with AVX2 and
//                FMA, else 4); a narrower one for tests
//   out          [tokens, heads, head_dim] contiguous, q's dtype
//   Torch's CPU flash kernel (under SDPA) runs its two products per tile as small GEMM library calls with
//   packing, and a chunk after earlier keys needed them gathered and a mask built: on the tiny benchmark model's
//   shapes it reached 40-110 GFLOP/s on two cores, and a 16-token chunk 1,900 keys into a prompt cost 0.5-1.1 ms a
//   layer. This kernel takes a vector's lanes of query rows at a time: each key's scores for all of them are one
//   fused multiply-add per dim, the softmax is lane-wise over keys (no horizontal sums), and half as many rows'
//   weighted values accumulate two vectors of dims at a time in registers: 80-155 GFLOP/s on the same shapes with
//   AVX-512, 1.3-2.5x the SDPA paths it replaces (`python -m serving.bench.prompt_attention`).
// serving::prefill_lanes() -> int: the widest lanes here (16, 8 or 4). At 4 (SSE, or any CPU that is not x86) the
//   kernel was 0.2-0.8x SDPA's speed, so the engine takes it only at 8 or more (`cpu_kernels.fast_prefill`).
//
// serving::rms_norm(x, weight, eps) -> y: RMSNorm of float32 rows in one op, y = x * (1 / sqrt(mean(x^2) + eps)) *
//   weight, for x [..., hidden] contiguous and weight [hidden]. Torch runs it as five ops (a norm, an addcmul, an
//   rsqrt, two products), each one dispatched and one pass over the rows: 28 us a call in a 16-row decode step of the
//   tiny benchmark model, nine calls a step, 4.7% of the step.
//
// serving::rotary_(x, cos, sin) -> (), in place: the rotary embedding of float32 x [tokens, heads, head_dim] (any
//   token stride; heads one after another) as x * cos + rotate_half(x) * sin for cos and sin [tokens, head_dim]
//   (any token stride), where rotate_half's sign is already in `sin`: out[i] = x[i] cos[i] + x[i +- half] sin[i]. In
//   torch it is three ops (a product, a roll that copies, an addcmul).
//
// serving::silu_mul(gate, up) -> out: the MLP's silu(gate) * up of float32 [tokens, width] (any row strides, rows
//   contiguous: the halves of the packed gate/up projection) in one pass. In torch it is two (silu, then the
//   product), and silu's vectorized exp cost 250 us a call on 1,500 tokens of the tiny benchmark model's 688 wide
//   MLP, 2% of a step of long prompts.
//
// serving::refuse_tokens(scores, bitmask, rows) -> (), in place
//   scores   [batch, vocab] float32, contiguous: every token a constrained row's grammar refuses becomes -inf
//   bitmask  [len(rows), words] int32, contiguous: llguidance's layout, bit t % 32 of word t / 32 set = allowed
//   rows     [len(rows)] int64: the row of `scores` that each bitmask row constrains
// Tokens past 32 * words (logits wider than the grammar's vocabulary) are refused; other rows are not touched.
// A grammar's mask allows a few tokens or all but a few, so most words are all ones or all zeros: the loop skips
// the first and fills runs of the second, where numpy's masked copy (unpack to bytes, then copy where true) spent
// 40-80 us a row at 8k tokens.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <tuple>
#include <type_traits>
#include <vector>

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define SERVING_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define SERVING_CLONES
#endif

namespace {

struct Shape {
  int64_t rows, heads, kv_heads, head_dim, block_size, max_blocks;
  int64_t q_row_stride, q_head_stride, cache_row_stride;
  float scale;
};

// One row: every query head against the row's keys, in one pass over its blocks (each slot's keys of all kv heads
// are one contiguous run, read once); `scores` holds heads x length floats.
template <typename T>
SERVING_CLONES void attend_row(const T* q, const T* key_cache, const T* value_cache, const int32_t* table,
                               int64_t length, const Shape& s, T* out, float* lse, std::vector<float>& scores,
                               std::vector<float>& query, std::vector<float>& acc) {
  const int64_t heads = s.heads, group = s.heads / s.kv_heads;
  const int64_t d = s.head_dim;
  scores.resize(static_cast<size_t>(heads * length));
  query.resize(static_cast<size_t>(heads * d));
  acc.assign(static_cast<size_t>(heads * d), 0.0f);
  float* qf = query.data();
  for (int64_t h = 0; h < heads; ++h) {
    const T* src = q + h * s.q_head_stride;
    for (int64_t i = 0; i < d; ++i) qf[h * d + i] = static_cast<float>(src[i]) * s.scale;
  }
  std::vector<int64_t> offset(static_cast<size_t>(heads));  // where head h's kv head lies in a slot
  for (int64_t h = 0; h < heads; ++h) offset[h] = (h / group) * d;
  const int64_t blocks = (length + s.block_size - 1) / s.block_size;
  // the first slot of block `b` of this row's table in a cache; its slots follow cache_row_stride apart
  const auto block_at = [&](const T* cache, int64_t b) {
    return cache + static_cast<int64_t>(table[b]) * s.block_size * s.cache_row_stride;
  };
  float* sc = scores.data();
  for (int64_t b = 0; b < blocks; ++b) {
    const T* slot = block_at(key_cache, b);
    const int64_t first = b * s.block_size, count = std::min(s.block_size, length - first);
    for (int64_t j = 0; j < count; ++j, slot += s.cache_row_stride) {
      for (int64_t h = 0; h < heads; ++h) {
        const float* qh = qf + h * d;
        const T* k = slot + offset[h];
        float dot = 0.0f;
        for (int64_t i = 0; i < d; ++i) dot += qh[i] * static_cast<float>(k[i]);
        sc[h * length + first + j] = dot;
      }
    }
  }
  std::vector<float> sums(static_cast<size_t>(heads));
  for (int64_t h = 0; h < heads; ++h) {
    float* row = sc + h * length;
    float high = -std::numeric_limits<float>::infinity();
    for (int64_t t = 0; t < length; ++t) high = std::max(high, row[t]);
    float sum = 0.0f;
    for (int64_t t = 0; t < length; ++t) {
      row[t] = std::exp(row[t] - high);
      sum += row[t];
    }
    sums[h] = sum;
    if (lse != nullptr) lse[h] = high + std::log(sum);
  }
  float* a = acc.data();
  for (int64_t b = 0; b < blocks; ++b) {
    const T* slot = block_at(value_cache, b);
    const int64_t first = b * s.block_size, count = std::min(s.block_size, length - first);
    for (int64_t j = 0; j < count; ++j, slot += s.cache_row_stride) {
      for (int64_t h = 0; h < heads; ++h) {
        const float w = sc[h * length + first + j];
        const T* v = slot + offset[h];
        float* ah = a + h * d;
        for (int64_t i = 0; i < d; ++i) ah[i] += w * static_cast<float>(v[i]);
      }
    }
  }
  for (int64_t h = 0; h < heads; ++h) {
    const float inverse = 1.0f / sums[h];
    T* dst = out + h * d;
    for (int64_t i = 0; i < d; ++i) dst[i] = static_cast<T>(a[h * d + i] * inverse);
  }
}

template <typename T>
void run(const at::Tensor& q, const at::Tensor& key_cache, const at::Tensor& value_cache, const int32_t* tables,
         const int32_t* lengths, const Shape& s, at::Tensor& out, float* lse) {
  const T* qp = q.data_ptr<T>();
  const T* kp = key_cache.data_ptr<T>();
  const T* vp = value_cache.data_ptr<T>();
  T* op = out.data_ptr<T>();
  const int64_t tasks = s.rows;
  // Split the rows into one contiguous range per thread of about equal keys read (rows differ in length).
  std::vector<int64_t> cost(static_cast<size_t>(tasks + 1), 0);
  for (int64_t task = 0; task < tasks; ++task) cost[task + 1] = cost[task] + lengths[task] + 1;
  const int64_t parts = std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), tasks));
  at::parallel_for(0, parts, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> scores, query, acc;
    for (int64_t part = begin; part < end; ++part) {
      const int64_t first = std::lower_bound(cost.begin(), cost.end(), cost[tasks] * part / parts) - cost.begin();
      const int64_t last = std::lower_bound(cost.begin(), cost.end(), cost[tasks] * (part + 1) / parts) - cost.begin();
      for (int64_t task = std::min(first, tasks); task < std::min(last, tasks); ++task) {
        attend_row<T>(qp + task * s.q_row_stride, kp, vp, tables + task * s.max_blocks, lengths[task], s,
                      op + task * s.heads * s.head_dim, lse == nullptr ? nullptr : lse + task * s.heads, scores,
                      query, acc);
      }
    }
  });
}

// The shapes of attention over the paged cache, after the checks both kernels share (`what` names the table's rows).
Shape paged_shape(const at::Tensor& q, const at::Tensor& key_cache, const at::Tensor& value_cache,
                  const at::Tensor& block_tables, int64_t block_size, double scale, const char* what) {
  TORCH_CHECK(q.device().is_cpu() && key_cache.device().is_cpu(), "paged attention runs on the CPU");
  TORCH_CHECK(q.dim() == 3 && q.stride(2) == 1, "q must be [rows, heads, head_dim] with a contiguous last dim");
  TORCH_CHECK(key_cache.is_contiguous() && value_cache.is_contiguous(), "the caches must be contiguous");
  TORCH_CHECK(key_cache.scalar_type() == q.scalar_type() && value_cache.scalar_type() == q.scalar_type(),
              "q and the caches must share a dtype");
  TORCH_CHECK(block_tables.scalar_type() == at::kInt && block_tables.is_contiguous() && block_tables.dim() == 2,
              "block_tables must be a contiguous int32 [", what, ", max_blocks]");
  Shape s;
  s.rows = q.size(0);
  s.heads = q.size(1);
  s.head_dim = q.size(2);
  s.kv_heads = key_cache.size(1) / s.head_dim;
  s.block_size = block_size;
  s.max_blocks = block_tables.size(1);
  s.q_row_stride = q.stride(0);
  s.q_head_stride = q.stride(1);
  s.cache_row_stride = key_cache.size(1);
  s.scale = static_cast<float>(scale);
  TORCH_CHECK(s.kv_heads > 0 && s.heads % s.kv_heads == 0, "heads must be a multiple of the kv heads");
  return s;
}

// Checks that the first `keys` keys of a table's row fit it and name blocks inside the cache.
void check_table(const int32_t* table, int64_t keys, const Shape& s, int64_t cache_blocks, const char* what) {
  TORCH_CHECK(keys <= s.max_blocks * s.block_size, what, " must fit its table");
  for (int64_t b = 0; b < (keys + s.block_size - 1) / s.block_size; ++b) {
    TORCH_CHECK(table[b] >= 0 && table[b] < cache_blocks, "a block table names a block outside the cache");
  }
}

// Checks the arguments, then fills `out` (and `lse` when defined).
void paged_attend(const at::Tensor& q, const at::Tensor& key_cache, const at::Tensor& value_cache,
                  const at::Tensor& block_tables, const at::Tensor& lengths, int64_t block_size, double scale,
                  at::Tensor& out, float* lse) {
  const Shape s = paged_shape(q, key_cache, value_cache, block_tables, block_size, scale, "rows");
  TORCH_CHECK(lengths.scalar_type() == at::kInt && lengths.is_contiguous(), "lengths must be contiguous int32");
  TORCH_CHECK(block_tables.size(0) == s.rows && lengths.size(0) == s.rows, "one table and length per row");
  const int32_t* tables = block_tables.data_ptr<int32_t>();
  const int32_t* lens = lengths.data_ptr<int32_t>();
  const int64_t cache_blocks = key_cache.size(0) / block_size;
  for (int64_t row = 0; row < s.rows; ++row) {
    TORCH_CHECK(lens[row] > 0, "a row's length must be positive");
    check_table(tables + row * s.max_blocks, lens[row], s, cache_blocks, "a row's length");
  }
  switch (q.scalar_type()) {
    case at::kFloat: run<float>(q, key_cache, value_cache, tables, lens, s, out, lse); break;
    case at::kBFloat16: run<at::BFloat16>(q, key_cache, value_cache, tables, lens, s, out, lse); break;
    case at::kHalf: run<at::Half>(q, key_cache, value_cache, tables, lens, s, out, lse); break;
    default: TORCH_CHECK(false, "paged_decode takes float32, bfloat16 or float16");
  }
}

at::Tensor paged_decode(const at::Tensor& q, const at::Tensor& key_cache, const at::Tensor& value_cache,
                        const at::Tensor& block_tables, const at::Tensor& lengths, int64_t block_size, double scale) {
  at::Tensor out = at::empty({q.size(0), q.size(1), q.size(2)}, q.options());
  paged_attend(q, key_cache, value_cache, block_tables, lengths, block_size, scale, out, nullptr);
  return out;
}

std::tuple<at::Tensor, at::Tensor> paged_decode_lse(const at::Tensor& q, const at::Tensor& key_cache,
                                                    const at::Tensor& value_cache, const at::Tensor& block_tables,
                                                    const at::Tensor& lengths, int64_t block_size, double scale) {
  at::Tensor out = at::empty({q.size(0), q.size(1), q.size(2)}, q.options());
  at::Tensor lse = at::empty({q.size(0), q.size(1)}, q.options().dtype(at::kFloat));
  paged_attend(q, key_cache, value_cache, block_tables, lengths, block_size, scale, out, lse.data_ptr<float>());
  return {out, lse};
}

// Rows [first, last) of x into y; the sum of squares accumulates in float, as torch's does for float32.
SERVING_CLONES void norm_rows(const float* x, const float* weight, float* y, int64_t rows, int64_t hidden,
                              float eps) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * hidden;
    float* yr = y + r * hidden;
    float sum = 0.0f;
    for (int64_t i = 0; i < hidden; ++i) sum += xr[i] * xr[i];
    const float scale = 1.0f / std::sqrt(sum / static_cast<float>(hidden) + eps);
    for (int64_t i = 0; i < hidden; ++i) yr[i] = (xr[i] * scale) * weight[i];
  }
}

at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& weight, double eps) {
  TORCH_CHECK(x.device().is_cpu() && x.scalar_type() == at::kFloat && x.is_contiguous() && x.dim() >= 1,
              "x must be a contiguous float32 tensor on the CPU");
  const int64_t hidden = x.size(-1);
  TORCH_CHECK(weight.scalar_type() == at::kFloat && weight.is_contiguous() && weight.numel() == hidden,
              "weight must be a contiguous float32 [hidden]");
  at::Tensor y = at::empty_like(x);
  const int64_t rows = hidden == 0 ? 0 : x.numel() / hidden;
  const float* xp = x.data_ptr<float>();
  const float* wp = weight.data_ptr<float>();
  float* yp = y.data_ptr<float>();
  // a decode step's few rows run on the calling thread (no parallel region); a prompt's many are split
  const int64_t grain = std::max<int64_t>(1, 32768 / std::max<int64_t>(hidden, 1));
  at::parallel_for(0, rows, grain, [&](int64_t begin, int64_t end) {
    norm_rows(xp + begin * hidden, wp, yp + begin * hidden, end - begin, hidden, static_cast<float>(eps));
  });
  return y;
}

// Tokens [first, last): each head's pairs (i, i + half) from their old values, so in place is safe.
SERVING_CLONES void rotate_tokens(float* x, const float* cos, const float* sin, int64_t first, int64_t last,
                                  int64_t heads, int64_t dim, int64_t x_stride, int64_t cos_stride,
                                  int64_t sin_stride) {
  const int64_t half = dim / 2;
  for (int64_t t = first; t < last; ++t) {
    const float* c = cos + t * cos_stride;
    const float* s = sin + t * sin_stride;
    for (int64_t h = 0; h < heads; ++h) {
      float* v = x + t * x_stride + h * dim;
      for (int64_t i = 0; i < half; ++i) {
        const float low = v[i], high = v[i + half];
        v[i] = low * c[i] + high * s[i];
        v[i + half] = high * c[i + half] + low * s[i + half];
      }
    }
  }
}

void rotary_(at::Tensor x, const at::Tensor& cos, const at::Tensor& sin) {
  TORCH_CHECK(x.device().is_cpu() && x.scalar_type() == at::kFloat && x.dim() == 3,
              "x must be a float32 [tokens, heads, head_dim] on the CPU");
  const int64_t tokens = x.size(0), heads = x.size(1), dim = x.size(2);
  TORCH_CHECK(dim % 2 == 0 && x.stride(2) == 1 && (heads == 1 || x.stride(1) == dim),
              "x's heads must lie one after another, each contiguous, with an even head_dim");
  for (const at::Tensor* table : {&cos, &sin}) {
    TORCH_CHECK(table->scalar_type() == at::kFloat && table->dim() == 2 && table->size(0) == tokens &&
                    table->size(1) == dim && table->stride(1) == 1,
                "cos and sin must be float32 [tokens, head_dim] with a contiguous last dim");
  }
  float* xp = x.data_ptr<float>();
  const float* cp = cos.data_ptr<float>();
  const float* sp = sin.data_ptr<float>();
  const int64_t x_stride = x.stride(0), cos_stride = cos.stride(0), sin_stride = sin.stride(0);
  // a decode step's few tokens on the calling thread, a prompt's split over the threads
  at::parallel_for(0, tokens, std::max<int64_t>(1, 32768 / std::max<int64_t>(heads * dim, 1)),
                   [&](int64_t begin, int64_t end) {
                     rotate_tokens(xp, cp, sp, begin, end, heads, dim, x_stride, cos_stride, sin_stride);
                   });
}

// e^(t - n ln 2) by a degree-7 polynomial of the remainder r = t - n ln 2 in [-ln 2 / 2, ln 2 / 2] (ln 2 split in
// two so that r is exact), for a float or for a vector of them lane-wise.
template <typename V>
inline V exp_remainder(V t, V n) {
  const V r = (t - n * 0.693359375f) + n * 2.12194440e-4f;
  V p = r * 1.9875691500e-4f + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  return p * r * r + r + 1.0f;
}

// e^t for t in [-87, 87] (what `silu_rows` passes): 2^n times `exp_remainder`; within 2 ulp of expf, and plain
// arithmetic that the compiler vectorizes, where a call to expf stays one element at a time.
inline float exp_in_range(float t) {
  const float n = std::floor(t * 1.44269504088896341f + 0.5f);
  const float p = exp_remainder(t, n);
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;  // 2^n, n in [-126, 127]: a normal float
  float scale;
  std::memcpy(&scale, &bits, sizeof scale);
  return p * scale;
}

// 1/x for x in [1, 2^126): Newton's iteration from a bit-trick estimate (within 12%), three steps to float
// precision. A division is a third of the vectorized loop's time on AVX-512 (0.75 against 0.44 ns an element).
inline float reciprocal(float x) {
  int32_t bits;
  std::memcpy(&bits, &x, sizeof bits);
  bits = 0x7EF311C3 - bits;
  float y;
  std::memcpy(&y, &bits, sizeof y);
  y = y * (2.0f - x * y);
  y = y * (2.0f - x * y);
  y = y * (2.0f - x * y);
  return y;
}

// Rows [first, last): out = gate * sigmoid(gate) * up, within 3e-7 of it. A NaN gate stays NaN (it multiplies);
// e^-gate is clamped to e^87 (its reciprocal stays a normal float), so a very negative gate gives a product of about
// zero, as torch's does.
SERVING_CLONES void silu_rows(const float* gate, const float* up, float* out, int64_t first, int64_t last,
                              int64_t width, int64_t gate_stride, int64_t up_stride) {
  for (int64_t row = first; row < last; ++row) {
    const float* g = gate + row * gate_stride;
    const float* u = up + row * up_stride;
    float* o = out + row * width;
    for (int64_t i = 0; i < width; ++i) {
      const float t = std::min(std::max(-g[i], -87.0f), 87.0f);
      o[i] = g[i] * reciprocal(1.0f + exp_in_range(t)) * u[i];
    }
  }
}

at::Tensor silu_mul(const at::Tensor& gate, const at::Tensor& up) {
  TORCH_CHECK(gate.device().is_cpu() && gate.scalar_type() == at::kFloat && up.scalar_type() == at::kFloat &&
                  gate.dim() == 2 && gate.sizes() == up.sizes() && gate.stride(1) == 1 && up.stride(1) == 1,
              "gate and up must be float32 [tokens, width] on the CPU, each row contiguous");
  const int64_t tokens = gate.size(0), width = gate.size(1);
  at::Tensor out = at::empty({tokens, width}, gate.options());
  const float* gp = gate.data_ptr<float>();
  const float* up_data = up.data_ptr<float>();
  float* op = out.data_ptr<float>();
  const int64_t gate_stride = gate.stride(0), up_stride = up.stride(0);
  // a decode step's few rows on the calling thread, a prompt's split over the threads
  at::parallel_for(0, tokens, std::max<int64_t>(1, 16384 / std::max<int64_t>(width, 1)),
                   [&](int64_t begin, int64_t end) {
                     silu_rows(gp, up_data, op, begin, end, width, gate_stride, up_stride);
                   });
  return out;
}

// Prompt chunks over the paged cache (`paged_prefill`). A task is one chunk's query rows of one kv head (each row
// a token and one of the query heads that share the kv head), or a run of them. It takes its rows L at a time (L =
// 16 floats on AVX-512, 8 on AVX2, 4 elsewhere: one vector register), as the lanes of one vector: for every key the
// tile sees, the tile's L scores are a sum of the query tile's columns (transposed once, L columns held in
// registers) times the key's elements broadcast, with the keys read in place. The scores [key][row] are then masked
// (each row sees the keys up to its own position), their maxima, exponentials and sums taken lane-wise (no
// horizontal reduction, no online rescaling), and the values, read in place, are summed into L / 2 rows by 2L dims
// of accumulators at a time. The width is chosen when the kernel runs (`__builtin_cpu_supports`): a 16-lane vector
// compiled for AVX2 spilled its registers and ran 10-30x slower than SDPA.
struct Chunks {
  const int32_t* tables;  // [chunks, max_blocks]
  const int32_t* starts;  // position of each chunk's first query
  const int32_t* counts;  // queries of each chunk
  const int64_t* firsts;  // each chunk's first row of q, and of out
  int64_t max_blocks;
};

// The tensors of a call, and one task of it: rows [row_begin, row_end) of a chunk's rows of one kv head.
template <typename T>
struct Prefill {
  const T* q;
  const T* key_cache;
  const T* value_cache;
  T* out;
};
struct PrefillTask {
  int64_t chunk, kv_head, row_begin, row_end;
};

// L floats (and int32s) in one vector register, loaded from any float address. Arrays of them are of `Row` (a
// std::vector of an under-aligned vector type would lose the attribute, and its elements be stored as if aligned).
template <int64_t L>
struct Lanes {
  typedef float Floats __attribute__((vector_size(4 * L), aligned(4)));
  typedef int32_t Ints __attribute__((vector_size(4 * L), aligned(4)));
  struct alignas(4 * L) Row {
    Floats v;
  };
};

#define SERVING_INLINE __attribute__((always_inline)) inline

// e^t lane-wise for t in [-87, 0], as `exp_in_range` (floor by truncation, corrected where it rounded up).
template <int64_t L>
SERVING_INLINE typename Lanes<L>::Floats exp_lanes(typename Lanes<L>::Floats t) {
  using Floats = typename Lanes<L>::Floats;
  using Ints = typename Lanes<L>::Ints;
  const Floats x = t * 1.44269504088896341f + 0.5f;
  Ints whole = __builtin_convertvector(x, Ints);
  Floats n = __builtin_convertvector(whole, Floats);
  const Ints above = n > x;  // -1 in the lanes where truncation went up (negative non-integers)
  n += __builtin_convertvector(above, Floats);
  whole += above;
  return exp_remainder(t, n) * reinterpret_cast<Floats>((whole + 127) << 23);
}

// Values [L / 2 rows][Width dims from `dim`] of a tile: the weighted sums over `keys` keys, into `out_rows`.
template <int64_t L, int64_t Width>
SERVING_INLINE void weighted_values(const typename Lanes<L>::Row* weights, int64_t lane0, const float* const* value,
                                    int64_t keys, int64_t dim, float* const* out_rows, const float* inverse) {
  using Floats = typename Lanes<L>::Floats;
  constexpr int64_t rows = L / 2, parts = Width / L;
  Floats acc[rows][parts] = {};
  for (int64_t j = 0; j < keys; ++j) {
    Floats v[parts];
    for (int64_t w = 0; w < parts; ++w) v[w] = *reinterpret_cast<const Floats*>(value[j] + dim + L * w);
    const Floats p = weights[j].v;
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t w = 0; w < parts; ++w) acc[r][w] += p[lane0 + r] * v[w];
    }
  }
  for (int64_t r = 0; r < rows; ++r) {
    if (out_rows[r] == nullptr) continue;
    for (int64_t w = 0; w < parts; ++w) *reinterpret_cast<Floats*>(out_rows[r] + dim + L * w) = acc[r][w] * inverse[r];
  }
}

template <typename T, int64_t L>
SERVING_INLINE void prefill_rows(const Prefill<T>& call, const Chunks& c, const Shape& s, const PrefillTask& task,
                                 std::vector<float>& scratch) {
  const T *q = call.q, *key_cache = call.key_cache, *value_cache = call.value_cache;
  T* out = call.out;
  const int64_t chunk = task.chunk, kv_head = task.kv_head, row_begin = task.row_begin, row_end = task.row_end;
  using Floats = typename Lanes<L>::Floats;
  using Row = typename Lanes<L>::Row;
  constexpr int64_t pv_rows = L / 2;
  const int64_t d = s.head_dim, group = s.heads / s.kv_heads, bs = s.block_size;
  const int32_t* table = c.tables + chunk * c.max_blocks;
  const int64_t start = c.starts[chunk], first = c.firsts[chunk];
  // where each key and value the task's rows see lies (copied to float first for other dtypes)
  const int64_t keys = start + (row_end - 1) / group + 1;
  std::vector<const float*> key(static_cast<size_t>(keys)), value(static_cast<size_t>(keys));
  const bool widen = !std::is_same<T, float>::value;
  scratch.resize(widen ? static_cast<size_t>(2 * keys * d) : 0);
  for (int64_t p = 0; p < keys; ++p) {
    const int64_t offset = (static_cast<int64_t>(table[p / bs]) * bs + p % bs) * s.cache_row_stride + kv_head * d;
    if (widen) {
      float* k = scratch.data() + p * d;
      float* v = scratch.data() + (keys + p) * d;
      for (int64_t i = 0; i < d; ++i) k[i] = static_cast<float>(key_cache[offset + i]);
      for (int64_t i = 0; i < d; ++i) v[i] = static_cast<float>(value_cache[offset + i]);
      key[p] = k;
      value[p] = v;
    } else {
      key[p] = reinterpret_cast<const float*>(key_cache + offset);
      value[p] = reinterpret_cast<const float*>(value_cache + offset);
    }
  }
  std::vector<Row> query(static_cast<size_t>(d));  // [dim][row lane]
  std::vector<Row> scores;                         // [key][row lane]
  std::vector<float> staged(widen ? static_cast<size_t>(L * d) : 0);
  const float minus_inf = -std::numeric_limits<float>::infinity();
  for (int64_t r0 = row_begin; r0 < row_end; r0 += L) {
    const int64_t rows = std::min(L, row_end - r0);
    Floats limit = {};  // keys each row sees (0: a padding lane)
    int64_t seen = 0;
    for (auto& column : query) column.v = Floats{};
    T* out_row[L] = {};
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t token = (r0 + r) / group, head = kv_head * group + (r0 + r) % group;
      limit[r] = static_cast<float>(start + token + 1);
      seen = std::max(seen, start + token + 1);
      const T* src = q + (first + token) * s.q_row_stride + head * s.q_head_stride;
      for (int64_t i = 0; i < d; ++i) query[i].v[r] = static_cast<float>(src[i]) * s.scale;
      out_row[r] = out + ((first + token) * s.heads + head) * d;
    }
    scores.assign(static_cast<size_t>(seen), Row{});
    const int64_t whole = d - d % L;
    for (int64_t dim = 0; dim < whole; dim += L) {  // L query columns in registers, every key against them
      Floats column[L];
      for (int64_t i = 0; i < L; ++i) column[i] = query[dim + i].v;
      for (int64_t j = 0; j < seen; ++j) {
        const float* k = key[j] + dim;
        Floats sum = scores[j].v;
        for (int64_t i = 0; i < L; ++i) sum += column[i] * k[i];
        scores[j].v = sum;
      }
    }
    for (int64_t dim = whole; dim < d; ++dim) {
      for (int64_t j = 0; j < seen; ++j) scores[j].v += query[dim].v * key[j][dim];
    }
    Floats high = minus_inf + Floats{};
    for (int64_t j = 0; j < seen; ++j) {
      scores[j].v = static_cast<float>(j) < limit ? scores[j].v : minus_inf;
      high = scores[j].v > high ? scores[j].v : high;
    }
    high = limit > 0.0f ? high : 0.0f;  // padding lanes: finite
    Floats total = {};
    for (int64_t j = 0; j < seen; ++j) {
      const Floats shifted = scores[j].v - high;
      const Floats e = exp_lanes<L>(shifted < -87.0f ? -87.0f : shifted);  // NaN stays NaN
      scores[j].v = static_cast<float>(j) < limit ? e : 0.0f;
      total += scores[j].v;
    }
    float inverse[L];
    for (int64_t r = 0; r < L; ++r) inverse[r] = r < rows ? 1.0f / total[r] : 0.0f;
    float* widened[L] = {};  // float rows to write (out itself for float32)
    for (int64_t r = 0; r < rows; ++r) {
      widened[r] = widen ? staged.data() + r * d : reinterpret_cast<float*>(out_row[r]);
    }
    for (int64_t lane0 = 0; lane0 < rows; lane0 += pv_rows) {
      const int64_t reach = std::min(seen, static_cast<int64_t>(limit[std::min(lane0 + pv_rows, rows) - 1]));
      int64_t dim = 0;
      for (; dim + 2 * L <= d; dim += 2 * L) {
        weighted_values<L, 2 * L>(scores.data(), lane0, value.data(), reach, dim, widened + lane0, inverse + lane0);
      }
      for (; dim + L <= d; dim += L) {
        weighted_values<L, L>(scores.data(), lane0, value.data(), reach, dim, widened + lane0, inverse + lane0);
      }
      for (; dim < d; ++dim) {
        for (int64_t r = lane0; r < std::min(lane0 + pv_rows, rows); ++r) {
          float sum = 0.0f;
          for (int64_t j = 0; j < reach; ++j) sum += scores[j].v[r] * value[j][dim];
          widened[r][dim] = sum * inverse[r];
        }
      }
    }
    if (widen) {
      for (int64_t r = 0; r < rows; ++r) {
        for (int64_t i = 0; i < d; ++i) out_row[r][i] = static_cast<T>(staged[r * d + i]);
      }
    }
  }
}

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
template <typename T>
__attribute__((target("avx512f"))) void prefill_rows_avx512(const Prefill<T>& call, const Chunks& c, const Shape& s,
                                                            const PrefillTask& task, std::vector<float>& scratch) {
  prefill_rows<T, 16>(call, c, s, task, scratch);
}

template <typename T>
__attribute__((target("avx2,fma"))) void prefill_rows_avx2(const Prefill<T>& call, const Chunks& c, const Shape& s,
                                                           const PrefillTask& task, std::vector<float>& scratch) {
  prefill_rows<T, 8>(call, c, s, task, scratch);
}
#endif

// The lanes of this machine's widest vector registers that the kernel uses: 16, 8 or 4 (`serving::prefill_lanes`).
int64_t widest_lanes() {
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
  if (__builtin_cpu_supports("avx512f")) return 16;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return 8;
#endif
  return 4;
}

// A task's rows at the width of `lanes`.
template <typename T>
void prefill_task(int64_t lanes, const Prefill<T>& call, const Chunks& c, const Shape& s, const PrefillTask& task,
                  std::vector<float>& scratch) {
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
  if (lanes == 16) return prefill_rows_avx512<T>(call, c, s, task, scratch);
  if (lanes == 8) return prefill_rows_avx2<T>(call, c, s, task, scratch);
#endif
  prefill_rows<T, 4>(call, c, s, task, scratch);
}

at::Tensor paged_prefill(const at::Tensor& q, const at::Tensor& key_cache, const at::Tensor& value_cache,
                         const at::Tensor& block_tables, const at::Tensor& starts, const at::Tensor& counts,
                         int64_t block_size, double scale, int64_t lanes) {
  const Shape s = paged_shape(q, key_cache, value_cache, block_tables, block_size, scale, "chunks");
  TORCH_CHECK(starts.scalar_type() == at::kInt && starts.is_contiguous() && counts.scalar_type() == at::kInt &&
                  counts.is_contiguous() && starts.numel() == block_tables.size(0) &&
                  counts.numel() == block_tables.size(0),
              "starts and counts must be contiguous int32, one per chunk");
  const int64_t chunks = block_tables.size(0);
  const int32_t* start = starts.data_ptr<int32_t>();
  const int32_t* count = counts.data_ptr<int32_t>();
  const int32_t* tables = block_tables.data_ptr<int32_t>();
  const int64_t cache_blocks = key_cache.size(0) / block_size;
  std::vector<int64_t> firsts(static_cast<size_t>(chunks) + 1, 0);
  for (int64_t chunk = 0; chunk < chunks; ++chunk) {
    TORCH_CHECK(start[chunk] >= 0 && count[chunk] > 0, "a chunk needs a start and at least one token");
    check_table(tables + chunk * s.max_blocks, start[chunk] + count[chunk], s, cache_blocks, "a chunk's keys");
    firsts[chunk + 1] = firsts[chunk] + count[chunk];
  }
  TORCH_CHECK(firsts[chunks] == s.rows, "q must hold every chunk's queries, one chunk after another");
  at::Tensor out = at::empty({s.rows, s.heads, s.head_dim}, q.options());
  const Chunks c{tables, start, count, firsts.data(), s.max_blocks};
  const int64_t group = s.heads / s.kv_heads;
  // Tasks: each (chunk, kv head)'s rows cut at token boundaries into parts of about `target` key reads (a row
  // reads the keys up to its position, so a prompt's later rows cost more), at least two query tiles each. Each
  // thread then takes a run of tasks of about equal cost: chunks of different lengths balance.
  std::vector<PrefillTask> tasks;
  std::vector<double> cost{0.0};  // cumulative key reads, before each task and after the last
  const int64_t widest = widest_lanes();
  lanes = lanes == 0 ? widest : lanes;
  TORCH_CHECK((lanes == 4 || lanes == 8 || lanes == 16) && lanes <= widest,
              "lanes must be 0 (the widest), 4, or 8 and 16 where the CPU has AVX2 and AVX-512 (it has ", widest, ")");
  const int64_t threads = at::get_num_threads();
  double total = 0.0;
  for (int64_t chunk = 0; chunk < chunks; ++chunk) {
    const double n = count[chunk];
    total += (static_cast<double>(start[chunk]) * n + n * (n + 1) / 2) * group * s.kv_heads;
  }
  const double target = total / static_cast<double>(threads * 4);
  for (int64_t chunk = 0; chunk < chunks; ++chunk) {
    for (int64_t kv_head = 0; kv_head < s.kv_heads; ++kv_head) {
      int64_t begin = 0;
      double spent = 0.0;
      for (int64_t token = 0; token < count[chunk]; ++token) {
        spent += static_cast<double>(start[chunk] + token + 1) * group;
        const int64_t end = (token + 1) * group;
        if (token + 1 == count[chunk] || (spent >= target && end - begin >= 2 * lanes)) {
          tasks.push_back({chunk, kv_head, begin, end});
          cost.push_back(cost.back() + spent);
          begin = end;
          spent = 0.0;
        }
      }
    }
  }
  const int64_t task_count = static_cast<int64_t>(tasks.size());
  const int64_t parts = std::max<int64_t>(1, std::min(threads, task_count));
  const auto body = [&](auto tag) {
    using T = decltype(tag);
    at::parallel_for(0, parts, 1, [&](int64_t begin, int64_t end) {
      std::vector<float> scratch;
      const Prefill<T> call{q.data_ptr<T>(), key_cache.data_ptr<T>(), value_cache.data_ptr<T>(), out.data_ptr<T>()};
      for (int64_t part = begin; part < end; ++part) {
        const auto at_cost = [&](int64_t k) {
          const double share = cost[task_count] * static_cast<double>(k) / static_cast<double>(parts);
          return std::lower_bound(cost.begin(), cost.end(), share) - cost.begin();
        };
        for (int64_t index = at_cost(part); index < std::min(at_cost(part + 1), task_count); ++index) {
          prefill_task<T>(lanes, call, c, s, tasks[index], scratch);
        }
      }
    });
  };
  switch (q.scalar_type()) {
    case at::kFloat: body(float{}); break;
    case at::kBFloat16: body(at::BFloat16{}); break;
    case at::kHalf: body(at::Half{}); break;
    default: TORCH_CHECK(false, "paged_prefill takes float32, bfloat16 or float16");
  }
  return out;
}

void refuse_tokens(at::Tensor scores, const at::Tensor& bitmask, const at::Tensor& rows) {
  TORCH_CHECK(scores.device().is_cpu() && scores.scalar_type() == at::kFloat && scores.is_contiguous() &&
                  scores.dim() == 2,
              "scores must be a contiguous float32 [batch, vocab] on the CPU");
  TORCH_CHECK(bitmask.scalar_type() == at::kInt && bitmask.is_contiguous() && bitmask.dim() == 2,
              "bitmask must be a contiguous int32 [rows, words]");
  TORCH_CHECK(rows.scalar_type() == at::kLong && rows.is_contiguous() && rows.size(0) == bitmask.size(0),
              "rows must be int64, one per bitmask row");
  const int64_t batch = scores.size(0), vocab = scores.size(1), words = bitmask.size(1);
  const int64_t* row_ids = rows.data_ptr<int64_t>();
  for (int64_t r = 0; r < rows.size(0); ++r) {
    TORCH_CHECK(row_ids[r] >= 0 && row_ids[r] < batch, "a constrained row lies outside the scores");
  }
  const float refused = -std::numeric_limits<float>::infinity();
  const int64_t covered = std::min(vocab, words * 32);
  for (int64_t r = 0; r < rows.size(0); ++r) {
    float* out = scores.data_ptr<float>() + row_ids[r] * vocab;
    const uint32_t* bits = reinterpret_cast<const uint32_t*>(bitmask.data_ptr<int32_t>()) + r * words;
    for (int64_t word = 0; word * 32 < covered; ++word) {
      const uint32_t allowed = bits[word];
      if (allowed == 0xFFFFFFFFu) continue;
      const int64_t start = word * 32, end = std::min<int64_t>(start + 32, covered);
      if (allowed == 0) {
        std::fill(out + start, out + end, refused);
        continue;
      }
      for (uint32_t off = ~allowed; off != 0; off &= off - 1) {
        const int64_t token = start + __builtin_ctz(off);
        if (token < end) out[token] = refused;
      }
    }
    std::fill(out + covered, out + vocab, refused);
  }
}

}  // namespace

TORCH_LIBRARY(serving, m) {
  m.def("paged_decode(Tensor q, Tensor key_cache, Tensor value_cache, Tensor block_tables, Tensor lengths, "
        "int block_size, float scale) -> Tensor");
  m.def("paged_decode_lse(Tensor q, Tensor key_cache, Tensor value_cache, Tensor block_tables, Tensor lengths, "
        "int block_size, float scale) -> (Tensor, Tensor)");
  m.def("rms_norm(Tensor x, Tensor weight, float eps) -> Tensor");
  m.def("rotary_(Tensor(a!) x, Tensor cos, Tensor sin) -> ()");
  m.def("silu_mul(Tensor gate, Tensor up) -> Tensor");
  m.def("paged_prefill(Tensor q, Tensor key_cache, Tensor value_cache, Tensor block_tables, Tensor starts, "
        "Tensor counts, int block_size, float scale, int lanes=0) -> Tensor");
  m.def("prefill_lanes() -> int", widest_lanes);  // no tensor to dispatch on: one kernel for every key
  m.def("refuse_tokens(Tensor(a!) scores, Tensor bitmask, Tensor rows) -> ()");
}

TORCH_LIBRARY_IMPL(serving, CPU, m) {
  m.impl("paged_decode", paged_decode);
  m.impl("paged_decode_lse", paged_decode_lse);
  m.impl("rms_norm", rms_norm);
  m.impl("rotary_", rotary_);
  m.impl("silu_mul", silu_mul);
  m.impl("paged_prefill", paged_prefill);
  m.impl("refuse_tokens", refuse_tokens);
}
