"""The BERT question-answering graph in plain TensorFlow ops.

Written as functions over a dict of tensors keyed by the Google checkpoint
variable names, not as a Keras model: Keras 3 layers do not convert with
tf2onnx, and a plain dict lets the same code run on frozen constants (export)
and on `tf.Variable`s (fine-tuning).

The op choice is deliberate: LayerNorm as mean/variance/rsqrt and GELU as erf
(or tanh) arithmetic are exactly the subgraphs the fusion passes rewrite into
ONNX `LayerNormalization` and `Gelu`.
"""

from __future__ import annotations

import math

from bertbuild._lazy import import_tensorflow
from bertbuild.model.checkpoint import BertConfig

tf = import_tensorflow()

# Google BERT's additive attention-mask value for padded keys.
MASK_ADDER = -10000.0


def layer_norm(x, gamma, beta, eps):
    mean = tf.reduce_mean(x, axis=-1, keepdims=True)
    centred = x - mean
    variance = tf.reduce_mean(tf.square(centred), axis=-1, keepdims=True)
    return centred * tf.math.rsqrt(variance + eps) * gamma + beta


def gelu(x, kind: str):
    if kind == "gelu":  # exact: x * Phi(x)
        return x * 0.5 * (1.0 + tf.math.erf(x / math.sqrt(2.0)))
    # tanh approximation used by Google's original BERT code
    inner = math.sqrt(2.0 / math.pi) * (x + 0.044715 * x * x * x)
    return x * 0.5 * (1.0 + tf.tanh(inner))


def dense(x, weights, name):
    return tf.matmul(x, weights[f"{name}/kernel"]) + weights[f"{name}/bias"]


def _dropout(x, rate, training, seed=None):
    return tf.nn.dropout(x, rate=rate, seed=seed) if training and rate > 0 else x


def embeddings(weights, config: BertConfig, input_ids, segment_ids, training=False):
    seq_len = tf.shape(input_ids)[1]
    words = tf.gather(weights["bert/embeddings/word_embeddings"], input_ids)
    types = tf.gather(weights["bert/embeddings/token_type_embeddings"], segment_ids)
    positions = weights["bert/embeddings/position_embeddings"][:seq_len]
    summed = words + types + positions[tf.newaxis]
    out = layer_norm(
        summed,
        weights["bert/embeddings/LayerNorm/gamma"],
        weights["bert/embeddings/LayerNorm/beta"],
        config.layer_norm_eps,
    )
    return _dropout(out, config.hidden_dropout_prob, training)


def attention_bias(input_mask):
    """[batch, seq] 0/1 mask -> [batch, 1, 1, seq] additive bias, computed once."""
    mask = tf.cast(input_mask, tf.float32)[:, tf.newaxis, tf.newaxis, :]
    return (1.0 - mask) * MASK_ADDER


def self_attention(x, bias, weights, config: BertConfig, prefix, training=False):
    batch, seq = tf.shape(x)[0], tf.shape(x)[1]
    heads, size = config.num_attention_heads, config.head_size

    def split_heads(t):
        return tf.transpose(tf.reshape(t, [batch, seq, heads, size]), [0, 2, 1, 3])

    q = split_heads(dense(x, weights, f"{prefix}/attention/self/query"))
    k = split_heads(dense(x, weights, f"{prefix}/attention/self/key"))
    v = split_heads(dense(x, weights, f"{prefix}/attention/self/value"))
    scores = tf.matmul(q, k, transpose_b=True) * (1.0 / math.sqrt(size)) + bias
    probs = _dropout(tf.nn.softmax(scores, axis=-1), config.attention_probs_dropout_prob, training)
    context = tf.transpose(tf.matmul(probs, v), [0, 2, 1, 3])
    return tf.reshape(context, [batch, seq, config.hidden_size])


def encoder_layer(x, bias, weights, config: BertConfig, index, training=False):
    p = f"bert/encoder/layer_{index}"
    eps = config.layer_norm_eps
    attended = self_attention(x, bias, weights, config, p, training)
    attended = _dropout(dense(attended, weights, f"{p}/attention/output/dense"), config.hidden_dropout_prob, training)
    x = layer_norm(
        attended + x, weights[f"{p}/attention/output/LayerNorm/gamma"],
        weights[f"{p}/attention/output/LayerNorm/beta"], eps,
    )
    hidden = gelu(dense(x, weights, f"{p}/intermediate/dense"), config.hidden_act)
    out = _dropout(dense(hidden, weights, f"{p}/output/dense"), config.hidden_dropout_prob, training)
    return layer_norm(out + x, weights[f"{p}/output/LayerNorm/gamma"], weights[f"{p}/output/LayerNorm/beta"], eps)


def sequence_output(weights, config: BertConfig, input_ids, segment_ids, input_mask, training=False):
    """The last encoder layer's hidden states, [batch, seq, hidden]."""
    x = embeddings(weights, config, input_ids, segment_ids, training)
    bias = attention_bias(input_mask)
    for index in range(config.num_hidden_layers):
        x = encoder_layer(x, bias, weights, config, index, training)
    return x


def qa_logits(weights, config: BertConfig, input_ids, segment_ids, input_mask, training=False):
    """(start_logits, end_logits), each [batch, seq], from the `cls/squad` head."""
    hidden = sequence_output(weights, config, input_ids, segment_ids, input_mask, training)
    logits = tf.matmul(hidden, weights["cls/squad/output_weights"], transpose_b=True)
    logits = logits + weights["cls/squad/output_bias"]
    return logits[..., 0], logits[..., 1]



from bertbuild.model.signature import INPUT_NAMES, OUTPUT_NAMES  # noqa: E402  (re-exported)


def inference_function(weights_np: dict, config: BertConfig):
    """A `tf.function` with a dynamic [batch, seq] int32 signature over constant weights."""
    consts = {name: tf.constant(value) for name, value in weights_np.items()}
    spec = [tf.TensorSpec([None, None], tf.int32, name=n) for n in INPUT_NAMES]

    # No autograph: every branch and loop here is on Python values, and autograph would parse this
    # module's source with `ast` while parallel tasks parse .npy headers (see bertbuild.arrays).
    @tf.function(input_signature=spec, autograph=False)
    def qa(input_ids, segment_ids, input_mask):
        start, end = qa_logits(consts, config, input_ids, segment_ids, input_mask)
        return {"start_logits": tf.identity(start), "end_logits": tf.identity(end)}

    return qa
