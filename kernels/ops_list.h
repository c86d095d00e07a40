// The list of CPU ops, written once for an element type OT_OPS_REAL and a name macro OT_OPS_FN; ops.h includes
// it twice (float, and double with the `_f64` suffix). Do not include this file directly.
//
// Conventions, for every op:
// - Arrays are dense, row-major (last index fastest). T = tokens (all sequences of a batch flattened),
//   H = hidden, D = head dim, nh = query heads, nkv = key/value heads, E = experts, k = experts per token.
// - Forward functions overwrite their outputs.
// - Backward functions ACCUMULATE (+=) into every gradient they produce, inputs and parameters alike, so the
//   caller zeroes gradient buffers once and residual branches simply add. A NULL gradient pointer means
//   "not wanted" and skips that work.
// - Everything accumulates in double internally; results are rounded to the element type at the end.

// ---- embedding -----------------------------------------------------------------------------------------------
// out[t, :] = table[ids[t], :]
void OT_OPS_FN(ot_embedding_fwd)(OT_OPS_REAL *out, const int32_t *ids, const OT_OPS_REAL *table, int T, int H);
// dtable[ids[t], :] += dout[t, :]
void OT_OPS_FN(ot_embedding_bwd)(OT_OPS_REAL *dtable, const OT_OPS_REAL *dout, const int32_t *ids, int T, int H);

// ---- RMSNorm (HF GptOssRMSNorm): y = x * rsqrt(mean(x^2) + eps) * w; rstd[t] is saved for backward ------------
void OT_OPS_FN(ot_rmsnorm_fwd)(OT_OPS_REAL *y, OT_OPS_REAL *rstd, const OT_OPS_REAL *x, const OT_OPS_REAL *w, int T,
                               int H, float eps);
void OT_OPS_FN(ot_rmsnorm_bwd)(OT_OPS_REAL *dx, OT_OPS_REAL *dw, const OT_OPS_REAL *dy, const OT_OPS_REAL *x,
                               const OT_OPS_REAL *w, const OT_OPS_REAL *rstd, int T, int H);

// ---- dense linear: y[T, out] = x[T, in] · W[out, in]ᵀ + b[out]  (b may be NULL) ------------------------------
void OT_OPS_FN(ot_matmul_fwd)(OT_OPS_REAL *y, const OT_OPS_REAL *x, const OT_OPS_REAL *W, const OT_OPS_REAL *b, int T,
                              int in, int out);
// dx += dy · W;  dW += dyᵀ · x;  db += Σ_t dy
void OT_OPS_FN(ot_matmul_bwd)(OT_OPS_REAL *dx, OT_OPS_REAL *dW, OT_OPS_REAL *db, const OT_OPS_REAL *dy,
                              const OT_OPS_REAL *x, const OT_OPS_REAL *W, int T, int in, int out);

// ---- LoRA with PEFT semantics: y += scale · (x · Aᵀ) · Bᵀ, A [r, in], B [out, r]; xa [T, r] saved ------------
void OT_OPS_FN(ot_lora_fwd)(OT_OPS_REAL *y, OT_OPS_REAL *xa, const OT_OPS_REAL *x, const OT_OPS_REAL *A,
                            const OT_OPS_REAL *B, int T, int in, int r, int out, float scale);
void OT_OPS_FN(ot_lora_bwd)(OT_OPS_REAL *dx, OT_OPS_REAL *dA, OT_OPS_REAL *dB, const OT_OPS_REAL *dy,
                            const OT_OPS_REAL *x, const OT_OPS_REAL *xa, const OT_OPS_REAL *A, const OT_OPS_REAL *B,
                            int T, int in, int r, int out, float scale);

// ---- YaRN RoPE, NeoX half-split rotation, in place on x [T, nh, D] ---------------------------------------------
// angle = (float)pos[t] * inv_freq[i] in float (as HF does), then cos/sin times attn_factor.
void OT_OPS_FN(ot_rope_fwd)(OT_OPS_REAL *x, const int32_t *pos, const float *inv_freq, float attn_factor, int T,
                            int nh, int D);
// In place: turns dy (gradient w.r.t. the rotated x) into the gradient w.r.t. the unrotated x.
void OT_OPS_FN(ot_rope_bwd)(OT_OPS_REAL *dx, const int32_t *pos, const float *inv_freq, float attn_factor, int T,
                            int nh, int D);

// ---- attention with sinks, GQA, causal / sliding window, packed sequences -------------------------------------
// q [T, nh, D] and k, v [T, nkv, D] (already rotated); query head h uses kv head h / (nh / nkv).
// seg_start[t] = index of the first token of t's sequence; key j is visible to query i iff
//   seg_start[i] <= j <= i, and, when window > 0, i - j < window.
// scores = q·k / sqrt(D); the row gets one extra logit sinks[h]; softmax over row + sink; sink column dropped.
// out [T, nh, D]; lse [T, nh] = log Σ exp over the row including the sink (saved for backward).
void OT_OPS_FN(ot_attention_fwd)(OT_OPS_REAL *out, OT_OPS_REAL *lse, const OT_OPS_REAL *q, const OT_OPS_REAL *k,
                                 const OT_OPS_REAL *v, const OT_OPS_REAL *sinks, const int32_t *seg_start, int T,
                                 int nh, int nkv, int D, int window);
void OT_OPS_FN(ot_attention_bwd)(OT_OPS_REAL *dq, OT_OPS_REAL *dk, OT_OPS_REAL *dv, OT_OPS_REAL *dsinks,
                                 const OT_OPS_REAL *dout, const OT_OPS_REAL *out, const OT_OPS_REAL *lse,
                                 const OT_OPS_REAL *q, const OT_OPS_REAL *k, const OT_OPS_REAL *v,
                                 const OT_OPS_REAL *sinks, const int32_t *seg_start, int T, int nh, int nkv, int D,
                                 int window);

// ---- router: top-k of the raw logits [T, E] (descending; ties to the lower index), softmax over those k ------
void OT_OPS_FN(ot_router_topk_fwd)(int32_t *idx, OT_OPS_REAL *w, const OT_OPS_REAL *logits, int T, int E, int k);
// dlogits [T, E] += softmax backward of dw [T, k], scattered to the selected experts
void OT_OPS_FN(ot_router_topk_bwd)(OT_OPS_REAL *dlogits, const OT_OPS_REAL *dw, const OT_OPS_REAL *w,
                                   const int32_t *idx, int T, int E, int k);

// ---- MoE routing: the (token, slot) pairs grouped by expert (ot_moe_plan in ops.h), combined back per token ---
// out[t] = Σ_slot w[t, slot] · y[inv[t·k + slot]], y [n_pairs, H] in plan order; out [T, H] overwritten. The sum
// runs slot by slot in the element type (as the model has always added expert outputs).
void OT_OPS_FN(ot_moe_combine_fwd)(OT_OPS_REAL *out, const OT_OPS_REAL *y, const OT_OPS_REAL *w, const int32_t *inv,
                                   int T, int k, int H);
// For every plan row p (pair q = perm[p], token q / k): dy[p] = w[q] · dout[token] (overwritten: dy is the
// experts' own gradient buffer); dw[q] += dout[token] · y[p] (a double dot; NULL: skipped).
void OT_OPS_FN(ot_moe_combine_bwd)(OT_OPS_REAL *dy, OT_OPS_REAL *dw, const OT_OPS_REAL *dout, const OT_OPS_REAL *y,
                                   const OT_OPS_REAL *w, const int32_t *perm, int n_pairs, int k, int H);
// The routing weights' gradient without the experts' outputs. For every plan row p (pair q = perm[p], token
// t = q / k, expert e = idx[q]) whose input act[p] [n_pairs, I] went through the down projection y[p] = J_e·act[p]
// + b_e (J_e linear: the expert's weights, its LoRA included), the backward of that projection has given
// dact[p] = w[q]·J_eᵀ·dout[t]; so dout[t]·y[p] = dact[p]·act[p] / w[q] + dout[t]·b_e, and
//   dw[q] += dact[p]·act[p] / w[q] + dout[t]·b_e   (double dots; bias [E, H] may be NULL)
// is ot_moe_combine_bwd's dw without keeping y for backward. A pair with w[q] = 0 adds nothing: its dw does not
// reach the router (ot_router_topk_bwd weighs it by w[q]).
void OT_OPS_FN(ot_moe_route_grad)(OT_OPS_REAL *dw, const OT_OPS_REAL *dact, const OT_OPS_REAL *act,
                                  const OT_OPS_REAL *dout, const OT_OPS_REAL *bias, const OT_OPS_REAL *w,
                                  const int32_t *idx, const int32_t *perm, int n_pairs, int k, int I, int H);
// dx[perm[p] / k] += dx_perm[p] for the plan rows p in order (the gathered rows' gradient back in token order).
void OT_OPS_FN(ot_moe_unpermute_add)(OT_OPS_REAL *dx, const OT_OPS_REAL *dx_perm, const int32_t *perm, int n_pairs,
                                     int k, int H);

// ---- clamped SwiGLU on interleaved gate/up: gu [n, 2I] (even = gate, odd = up) -> act [n, I] ---------------
// gate = min(gate, limit); up = clamp(up, -limit, limit); act = (up + 1) · gate · sigmoid(alpha · gate)
void OT_OPS_FN(ot_swiglu_fwd)(OT_OPS_REAL *act, const OT_OPS_REAL *gu, int n, int I, float alpha, float limit);
void OT_OPS_FN(ot_swiglu_bwd)(OT_OPS_REAL *dgu, const OT_OPS_REAL *dact, const OT_OPS_REAL *gu, int n, int I,
                              float alpha, float limit);

// ---- one expert's linear map on a gathered group of n rows: y[n, out] = x[n, in] · W_eᵀ + b_e ---------------
// W is an ot_expert_weight (MXFP4 kept 4-bit and dequantized a row at a time, or dense float).
void OT_OPS_FN(ot_expert_matmul_fwd)(OT_OPS_REAL *y, const OT_OPS_REAL *x, const ot_expert_weight *W, int e,
                                     const float *bias_e, int n);
// dx += dy · W_e   (the expert weights and biases are frozen: no weight gradient)
void OT_OPS_FN(ot_expert_matmul_bwd)(OT_OPS_REAL *dx, const OT_OPS_REAL *dy, const ot_expert_weight *W, int e, int n);

// Full training only (osstune-train --full): the weight gradient of one DENSE expert's map on its group of n rows,
//   dW_e [out, in] += dyᵀ · x,  db_e [out] += Σ_rows dy   (either may be NULL).
// MXFP4 experts are never trained (they would have to be re-quantized every step): W->kind must be
// OT_EXPERT_DENSE, anything else stops with a message. W only supplies the kind and the shape.
void OT_OPS_FN(ot_expert_matmul_bwd_weight)(OT_OPS_REAL *dW_e, OT_OPS_REAL *db_e, const OT_OPS_REAL *dy,
                                            const OT_OPS_REAL *x, const ot_expert_weight *W, int n);

// ---- cross-entropy at selected positions through the output head -----------------------------------------------
// For each of n targets i: logits = h[pos[i]] · Wlmᵀ (V entries, computed a block of rows at a time; never all
// T × V), loss_i = logsumexp(logits) - logits[label[i]]. Returns Σ_i loss_i (double). When dh is non-NULL,
// dh[pos[i]] += grad_scale · (softmax(logits) - onehot(label[i])) · Wlm; when dWlm is non-NULL it gets the
// matching weight gradient.
double OT_OPS_FN(ot_lmhead_xent)(OT_OPS_REAL *dh, OT_OPS_REAL *dWlm, const OT_OPS_REAL *h, const OT_OPS_REAL *Wlm,
                                 const int32_t *pos, const int32_t *label, int n, int H, int V, float grad_scale);
// The same computation split over blocks of vocabulary rows, for a head that is never whole in memory (the FSDP
// path gathers it a chunk at a time, trainer/model/model_shard.c). For nb targets b: logits[b·V + v0 + j] = h[pos_b] ·
// W[j] for the nv rows W of the block starting at row v0 (call with logits + v0); then xent_rows turns complete
// logit rows into the loss (returns total + Σ_b loss_b, added in target order) and, with want_grad, into
// grad_scale · (softmax − onehot) in place; then dh_part adds Σ_j dlogits[b, v0 + j] · W[j] into acc[b·H ..] for
// each block in increasing v0. Same arithmetic, in the same order, as ot_lmhead_xent: the results are bitwise equal.
void OT_OPS_FN(ot_lmhead_logits_part)(OT_OPS_REAL *logits, int V, const OT_OPS_REAL *h, const OT_OPS_REAL *W,
                                      const int32_t *pos, int nb, int H, int nv);
double OT_OPS_FN(ot_xent_rows)(OT_OPS_REAL *logits, const int32_t *label, int nb, int V, float grad_scale,
                               int want_grad, double total);
void OT_OPS_FN(ot_lmhead_dh_part)(double *acc, const OT_OPS_REAL *logits, int V, const OT_OPS_REAL *W, int nb, int H,
                                  int nv);

// ---- attention of new queries over a KV cache (incremental decoding) -------------------------------------------
// One sequence. q [n, nh, D] holds the (rotated) queries of positions pos0 .. pos0+n-1; k_cache, v_cache
// [pos0+n, nkv, D] hold the keys and values of every position up to and including the last query's. Query i
// (position p = pos0+i) sees keys j with j <= p and, when window > 0, p - j < window: the mask ot_attention_fwd
// applies to a single sequence, with the same sink, scale and summation order, so decoding token by token gives
// the logits of the full forward. out [n, nh, D].
void OT_OPS_FN(ot_attention_cache_fwd)(OT_OPS_REAL *out, const OT_OPS_REAL *q, const OT_OPS_REAL *k_cache,
                                       const OT_OPS_REAL *v_cache, const OT_OPS_REAL *sinks, int n, int pos0, int nh,
                                       int nkv, int D, int window);
