/* libkbpack, onnx_check.c: the query encoder's ONNX graph walked as protobuf (kbpi_check_graph),
 * check for check as kbpack_runtime/guard.py's check_graph walks it (FORMAT.md §5.1), so that
 * kbp_encoder_get and kbp_verify refuse exactly the graphs kbc refuses: each message may use only
 * its listed fields; external data (data_location, external_data), operator domains other than ""
 * and "ai.onnx", operators outside ALLOWED_OPS, subgraphs, sparse tensors, functions and training
 * info are refused; every tensor's declared size (dims x element size) must be held by the bytes it
 * carries and all of them together by MAX_TENSOR_BYTES; nodes, tensors, rank and the graph's size
 * are bounded. The walk reads headers only (weights are skipped, never copied), allocates nothing,
 * nests at most Model > Graph > Node > Attribute > Tensor (or Graph > ValueInfo > Type > TensorType
 * > Shape > Dim) deep without recursion, and stops at the first refusal, in Python's words. Where
 * Python reads a field of an unexpected wire type as a range (a varint's value and end, or a fixed
 * field's bytes) this walk reads the same range, so that the verdict is Python's on any bytes. */
#include "kbpack_internal.h"

/* kbpack_runtime/guard.py's constants, same names and values (tests/test_c_verify_differential.py compares) */
#define MAX_GRAPH_BYTES (((uint64_t)2 << 30) - 1) /* protobuf's own limit for one message */
#define MAX_TENSOR_BYTES ((uint64_t)2 << 30)      /* all tensors' declared sizes together */
#define MAX_NODES 100000
#define MAX_TENSORS 100000 /* initializers and tensor attributes */
#define MAX_TENSOR_RANK 16

/* ALLOWED_OPS: kbpack_runtime/guard.py's allow-list, the operators of a BERT-family encoder (the test compares) */
static const char *const ALLOWED_OPS[] = {
    "Add", "And", "Cast", "Clip", "Concat", "Constant", "ConstantOfShape", "CumSum", "Div",
    "DynamicQuantizeLinear", "Equal", "Erf", "Exp", "Expand", "Flatten", "Gather", "GatherElements",
    "Gemm", "Greater", "GreaterOrEqual", "Identity", "LayerNormalization", "Less", "LessOrEqual",
    "MatMul", "MatMulInteger", "Max", "Min", "Mul", "Neg", "Not", "Or", "Pow", "Range", "Reciprocal",
    "ReduceL2", "ReduceMax", "ReduceMean", "ReduceSum", "ReduceSumSquare", "Relu", "Reshape", "Shape",
    "Sigmoid", "Slice", "Softmax", "Split", "Sqrt", "Squeeze", "Sub", "Tanh", "Transpose", "Unsqueeze",
    "Where",
};

/* TensorProto.DataType -> bytes per element (ELEMENT_BYTES); 0: refused (strings, complex, float8, 4-bit) */
static unsigned element_bytes(uint64_t t) {
  switch (t) {
  case 2: case 3: case 9: return 1;
  case 4: case 5: case 10: case 16: return 2;
  case 1: case 6: case 12: return 4;
  case 7: case 11: case 13: return 8;
  default: return 0;
  }
}

/* field numbers each message may use (onnx.proto); any other field is refused */
typedef struct {
  uint64_t field;
  const char *name;
} ox_name;

static const ox_name MODEL[] = {{1, "ir_version"}, {2, "producer_name"}, {3, "producer_version"}, {4, "domain"},
                                {5, "model_version"}, {6, "doc_string"}, {7, "graph"}, {8, "opset_import"},
                                {14, "metadata_props"}, {0, NULL}};
static const ox_name MODEL_REFUSED[] = {{20, "training_info"}, {25, "functions (local functions)"},
                                        {26, "configuration"}, {0, NULL}};
static const ox_name GRAPH[] = {{1, "node"}, {2, "name"}, {5, "initializer"}, {10, "doc_string"}, {11, "input"},
                                {12, "output"}, {13, "value_info"}, {14, "quantization_annotation"},
                                {16, "metadata_props"}, {0, NULL}};
static const ox_name GRAPH_REFUSED[] = {{15, "sparse_initializer"}, {0, NULL}};
static const ox_name NODE[] = {{1, "input"}, {2, "output"}, {3, "name"}, {4, "op_type"}, {5, "attribute"},
                               {6, "doc_string"}, {7, "domain"}, {9, "metadata_props"}, {0, NULL}};
static const ox_name ATTRIBUTE[] = {{1, "name"}, {2, "f"}, {3, "i"}, {4, "s"}, {5, "t"}, {7, "floats"},
                                    {8, "ints"}, {9, "strings"}, {10, "tensors"}, {13, "doc_string"},
                                    {20, "type"}, {0, NULL}};
static const ox_name ATTRIBUTE_REFUSED[] = {{6, "g (a subgraph)"}, {11, "graphs (subgraphs)"}, {22, "sparse_tensor"},
                                            {23, "sparse_tensors"}, {14, "tp (a type)"}, {15, "type_protos"},
                                            {21, "ref_attr_name"}, {0, NULL}};
static const ox_name TENSOR[] = {{1, "dims"}, {2, "data_type"}, {4, "float_data"}, {5, "int32_data"},
                                 {7, "int64_data"}, {8, "name"}, {9, "raw_data"}, {10, "double_data"},
                                 {11, "uint64_data"}, {12, "doc_string"}, {14, "data_location"},
                                 {16, "metadata_props"}, {0, NULL}};
static const ox_name TENSOR_REFUSED[] = {{3, "segment"}, {6, "string_data"},
                                         {13, "external_data (its bytes in a file outside the graph)"}, {0, NULL}};
static const ox_name VALUE_INFO[] = {{1, "name"}, {2, "type"}, {3, "doc_string"}, {4, "metadata_props"}, {0, NULL}};
static const ox_name TYPE[] = {{1, "tensor_type"}, {6, "denotation"}, {0, NULL}};
static const ox_name TENSOR_TYPE[] = {{1, "elem_type"}, {2, "shape"}, {0, NULL}};
static const ox_name SHAPE[] = {{1, "dim"}, {0, NULL}};
static const ox_name DIM[] = {{1, "dim_value"}, {2, "dim_param"}, {3, "denotation"}, {0, NULL}};
static const ox_name OPSET[] = {{1, "domain"}, {2, "version"}, {0, NULL}};
static const ox_name ENTRY[] = {{1, "key"}, {2, "value"}, {0, NULL}}; /* StringStringEntryProto */
static const ox_name ANNOTATION[] = {{1, "tensor_name"}, {2, "quant_parameter_tensor_names"}, {0, NULL}};
static const ox_name NONE[] = {{0, NULL}};

static const char *ox_lookup(const ox_name *t, uint64_t field) {
  for (; t->name; t++)
    if (t->field == field) return t->name;
  return NULL;
}

typedef struct {
  kbp_bundle *kb;
  const char *part;
  const uint8_t *buf;
  uint64_t nodes, tensors, declared;
} ox_walk;

/* One message's fields, one at a time: Python's _fields generator. */
typedef struct {
  uint64_t pos, end;
  const ox_name *allowed, *refused;
  const char *what;
} ox_iter;

/* A field as _fields yields it: (field, wire, a, b) with [a, b) the bytes of a length-delimited or
 * fixed field, and for a varint a = its value, b = where it ends (Python's slices then read
 * buf[a:b], empty when a >= b, and so does this walk). */
typedef struct {
  uint64_t field, a, b;
  unsigned wire;
} ox_field;

static int ox_refuse(ox_walk *w, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  kbpi_set_error(&w->kb->err, KBP_ERR_INVALID, w->part, fmt, ap);
  va_end(ap);
  return -1;
}

static int ox_varint(ox_walk *w, uint64_t *pos, uint64_t end, uint64_t *out) {
  uint64_t v = 0;
  *out = 0;
  for (unsigned shift = 0;; shift += 7) {
    if (*pos >= end || shift > 63) return ox_refuse(w, "malformed protobuf (a varint runs past its message)");
    uint8_t b = w->buf[(*pos)++];
    v |= (uint64_t)(b & 0x7F) << shift;
    if (b < 0x80) {
      *out = v;
      return 0;
    }
  }
}

static ox_iter ox_fields(uint64_t a, uint64_t b, const ox_name *allowed, const ox_name *refused, const char *what) {
  ox_iter it = {a, b, allowed, refused, what};
  return it;
}

/* 1: *f is the next field; 0: the message ends; -1: refused (kb->err says why) */
static int ox_next(ox_walk *w, ox_iter *it, ox_field *f) {
  uint64_t key = 0, n = 0;
  if (it->pos >= it->end) return 0;
  if (ox_varint(w, &it->pos, it->end, &key)) return -1;
  f->field = key >> 3;
  f->wire = (unsigned)(key & 7);
  if (f->field == 0) return ox_refuse(w, "malformed protobuf (field number 0 in %s)", it->what);
  const char *name = ox_lookup(it->refused, f->field);
  if (name) return ox_refuse(w, "%s has %s, which a bundle's encoder may not use", it->what, name);
  if (!(name = ox_lookup(it->allowed, f->field)))
    return ox_refuse(w, "%s has unknown field %llu", it->what, (unsigned long long)f->field);
  if (f->wire == 0) {
    if (ox_varint(w, &it->pos, it->end, &f->a)) return -1;
    f->b = it->pos;
    return 1;
  }
  if (f->wire == 2) {
    if (ox_varint(w, &it->pos, it->end, &n)) return -1;
  } else if (f->wire == 1 || f->wire == 5) {
    n = f->wire == 1 ? 8 : 4;
  } else {
    return ox_refuse(w, "malformed protobuf (wire type %u in %s)", f->wire, it->what);
  }
  if (n > it->end - it->pos) return ox_refuse(w, "malformed protobuf (%s.%s runs past its message)", it->what, name);
  f->a = it->pos;
  f->b = it->pos += n;
  return 1;
}

static int ox_want(ox_walk *w, const ox_field *f, unsigned wire, const char *what) {
  return f->wire == wire ? 0 : ox_refuse(w, "malformed protobuf (%s has the wrong wire type)", what);
}

/* buf[a:b] as text (empty when a >= b), refused unless UTF-8 */
static int ox_text(ox_walk *w, const ox_field *f, const uint8_t **s, size_t *n) {
  *s = w->buf;
  *n = f->a < f->b ? (size_t)(f->b - f->a) : 0;
  if (*n) *s = w->buf + f->a;
  return kbpi_utf8_valid(*s, *n) ? 0 : ox_refuse(w, "malformed protobuf (a name is not UTF-8)");
}

static int ox_flat(ox_walk *w, uint64_t a, uint64_t b, const ox_name *allowed, const char *what) {
  ox_iter it = ox_fields(a, b, allowed, NONE, what);
  ox_field f;
  int r;
  while ((r = ox_next(w, &it, &f)) > 0) {}
  return r;
}

/* Python's repr() of text[:80] (valid UTF-8): quoted, backslashes, quotes and controls escaped */
static void ox_repr(const uint8_t *s, size_t n, char *out, size_t cap) {
  int has_single = memchr(s, '\'', n) != NULL, has_double = memchr(s, '"', n) != NULL;
  char quote = has_single && !has_double ? '"' : '\'';
  size_t o = 0, chars = 0;
  uint32_t cp;
  out[o++] = quote;
  for (size_t i = 0, l; i < n && chars < 80 && o + 8 < cap; i += l, chars++) {
    l = kbpi_utf8_next(s + i, n - i, &cp);
    if (!l) break;
    if (cp == (uint32_t)quote || cp == '\\') { out[o++] = '\\'; out[o++] = (char)cp; }
    else if (cp == '\t') { memcpy(out + o, "\\t", 2); o += 2; }
    else if (cp == '\n') { memcpy(out + o, "\\n", 2); o += 2; }
    else if (cp == '\r') { memcpy(out + o, "\\r", 2); o += 2; }
    else if (cp < 0x20 || (cp >= 0x7F && cp <= 0xA0) || cp == 0xAD) o += (size_t)snprintf(out + o, cap - o, "\\x%02x", (unsigned)cp);
    else { memcpy(out + o, s + i, l); o += l; }
  }
  out[o++] = quote;
  out[o] = 0;
}

/* (hi, lo) as decimal: a declared size can reach 2^94 before the walk stops multiplying */
static void ox_u128_text(uint64_t hi, uint64_t lo, char out[48]) {
  uint32_t limb[4] = {(uint32_t)(hi >> 32), (uint32_t)hi, (uint32_t)(lo >> 32), (uint32_t)lo};
  char digits[48];
  size_t n = 0;
  do {
    uint64_t rem = 0;
    for (int i = 0; i < 4; i++) {
      uint64_t cur = rem << 32 | limb[i];
      limb[i] = (uint32_t)(cur / 10);
      rem = cur % 10;
    }
    digits[n++] = (char)('0' + rem);
  } while (limb[0] | limb[1] | limb[2] | limb[3]);
  for (size_t i = 0; i < n; i++) out[i] = digits[n - 1 - i];
  out[n] = 0;
}

static int ox_tensor(ox_walk *w, uint64_t start, uint64_t end, const char *where) {
  static const uint8_t unnamed[] = "?";
  char what[128], shown[400];
  uint64_t dims[MAX_TENSOR_RANK + 1], rank = 0, dtype = 1, payload = 0, d = 0;
  const uint8_t *name = unnamed;
  size_t name_len = 1;
  ox_field f;
  int r;
  if (++w->tensors > MAX_TENSORS) return ox_refuse(w, "more than %d tensors", MAX_TENSORS);
  snprintf(what, sizeof what, "tensor in %s", where);
  ox_iter it = ox_fields(start, end, TENSOR, TENSOR_REFUSED, what);
  while ((r = ox_next(w, &it, &f)) > 0) {
    if (f.field == 1) { /* dims: packed or one varint each */
      if (f.wire == 0) {
        if (rank <= MAX_TENSOR_RANK) dims[rank] = f.a;
        rank++;
      } else {
        for (uint64_t pos = f.a; pos < f.b; rank++) {
          if (ox_varint(w, &pos, f.b, &d)) return -1;
          if (rank <= MAX_TENSOR_RANK) dims[rank] = d;
        }
      }
      if (rank > MAX_TENSOR_RANK) return ox_refuse(w, "tensor in %s has more than %d dimensions", where, MAX_TENSOR_RANK);
    } else if (f.field == 2) {
      if (ox_want(w, &f, 0, "tensor data_type")) return -1;
      dtype = f.a;
    } else if (f.field == 8) {
      if (ox_text(w, &f, &name, &name_len)) return -1;
    } else if (f.field == 14) {
      if (ox_want(w, &f, 0, "tensor data_location")) return -1;
      if (f.a != 0) {
        ox_repr(name, name_len, shown, sizeof shown);
        return ox_refuse(w, "tensor %s in %s has data_location EXTERNAL (its bytes in a file outside the graph), "
                            "which a bundle's encoder may not use", shown, where);
      }
    } else if (f.field == 4 || f.field == 5 || f.field == 7 || f.field == 9 || f.field == 10 || f.field == 11) {
      int varints = f.field == 5 || f.field == 7 || f.field == 11; /* each element at least one byte on the wire, up to 8 in memory */
      if (f.wire == 2) payload += (f.b - f.a) * (varints ? 8 : 1);
      else payload += f.wire == 0 ? 8 : f.b - f.a;
    }
  }
  if (r < 0) return -1;
  unsigned size1 = element_bytes(dtype);
  ox_repr(name, name_len, shown, sizeof shown);
  if (!size1)
    return ox_refuse(w, "tensor %s in %s has data type %llu, which a bundle's encoder may not use", shown, where,
                     (unsigned long long)dtype);
  uint64_t hi = 0, lo = size1; /* the declared size, exact: lo <= 2^31 whenever another dimension multiplies it */
  for (uint64_t i = 0; i < rank; i++) {
    if (dims[i] >> 63) return ox_refuse(w, "tensor %s in %s has a negative dimension", shown, where);
    uint64_t p0 = lo * (dims[i] & 0xFFFFFFFFu), p1 = lo * (dims[i] >> 32);
    uint64_t sum = (p1 << 32) + p0;
    hi = (p1 >> 32) + (sum < p0);
    lo = sum;
    if (hi || lo > MAX_TENSOR_BYTES) break;
  }
  if (hi || lo > payload) {
    char declared[48];
    ox_u128_text(hi, lo, declared);
    return ox_refuse(w, "tensor %s in %s declares %s bytes but holds %llu", shown, where, declared,
                     (unsigned long long)payload);
  }
  w->declared += lo;
  if (w->declared > MAX_TENSOR_BYTES)
    return ox_refuse(w, "tensors declare more than %llu bytes in all", (unsigned long long)MAX_TENSOR_BYTES);
  return 0;
}

static int ox_value_info(ox_walk *w, uint64_t start, uint64_t end, const char *what) {
  char w2[96], w3[96], w4[96], w5[96];
  ox_field f, f2, f3, f4;
  int r, r2, r3, r4;
  snprintf(w2, sizeof w2, "%s type (only tensors)", what);
  snprintf(w3, sizeof w3, "%s tensor type", what);
  snprintf(w4, sizeof w4, "%s shape", what);
  snprintf(w5, sizeof w5, "%s dimension", what);
  ox_iter it = ox_fields(start, end, VALUE_INFO, NONE, what);
  while ((r = ox_next(w, &it, &f)) > 0) {
    if (f.field == 2) {
      ox_iter it2 = ox_fields(f.a, f.b, TYPE, NONE, w2);
      while ((r2 = ox_next(w, &it2, &f2)) > 0) {
        if (f2.field != 1) continue;
        ox_iter it3 = ox_fields(f2.a, f2.b, TENSOR_TYPE, NONE, w3);
        while ((r3 = ox_next(w, &it3, &f3)) > 0) {
          if (f3.field != 2) continue;
          ox_iter it4 = ox_fields(f3.a, f3.b, SHAPE, NONE, w4);
          while ((r4 = ox_next(w, &it4, &f4)) > 0)
            if (ox_flat(w, f4.a, f4.b, DIM, w5)) return -1;
          if (r4 < 0) return -1;
        }
        if (r3 < 0) return -1;
      }
      if (r2 < 0) return -1;
    } else if (f.field == 4) {
      snprintf(w2, sizeof w2, "%s metadata", what);
      if (ox_flat(w, f.a, f.b, ENTRY, w2)) return -1;
    }
  }
  return r;
}

static int ox_allowed_op(const uint8_t *s, size_t n) {
  for (size_t i = 0; i < sizeof ALLOWED_OPS / sizeof *ALLOWED_OPS; i++)
    if (strlen(ALLOWED_OPS[i]) == n && memcmp(ALLOWED_OPS[i], s, n) == 0) return 1;
  return 0;
}

static int ox_node(ox_walk *w, uint64_t start, uint64_t end) {
  const uint8_t *op = NULL, *domain = (const uint8_t *)"";
  size_t op_len = 0, domain_len = 0;
  char shown_op[400], shown_domain[400], what[64];
  ox_field f, f2;
  int r, r2;
  if (++w->nodes > MAX_NODES) return ox_refuse(w, "more than %d nodes", MAX_NODES);
  ox_iter it = ox_fields(start, end, NODE, NONE, "node");
  while ((r = ox_next(w, &it, &f)) > 0) {
    if (f.wire != 2) return ox_refuse(w, "malformed protobuf (a node field has the wrong wire type)");
    if (f.field == 4) {
      if (ox_text(w, &f, &op, &op_len)) return -1;
    } else if (f.field == 7) {
      if (ox_text(w, &f, &domain, &domain_len)) return -1;
    } else if (f.field == 9) {
      if (ox_flat(w, f.a, f.b, ENTRY, "node metadata")) return -1;
    }
  }
  if (r < 0) return -1;
  if (op) ox_repr(op, op_len, shown_op, sizeof shown_op);
  else memcpy(shown_op, "None", 5);
  if (!(domain_len == 0 || (domain_len == 7 && memcmp(domain, "ai.onnx", 7) == 0))) {
    ox_repr(domain, domain_len, shown_domain, sizeof shown_domain);
    return ox_refuse(w, "node %s is in operator domain %s (custom ops): only the default ONNX domain is allowed",
                     shown_op, shown_domain);
  }
  if (!op || !ox_allowed_op(op, op_len)) {
    if (!op) ox_repr((const uint8_t *)"None", 4, shown_op, sizeof shown_op);
    return ox_refuse(w, "operator %s is not on the BERT-family allow-list (FORMAT.md \xc2\xa7" "5.1)", shown_op);
  }
  snprintf(what, sizeof what, "%.*s attribute", (int)op_len, (const char *)op);
  /* the attributes, in a second pass over the node (it parsed whole above): Python keeps their
   * ranges in a list; nothing is allocated here */
  it = ox_fields(start, end, NODE, NONE, "node");
  while ((r = ox_next(w, &it, &f)) > 0) {
    if (f.field != 5) continue;
    ox_iter it2 = ox_fields(f.a, f.b, ATTRIBUTE, ATTRIBUTE_REFUSED, what);
    while ((r2 = ox_next(w, &it2, &f2)) > 0) {
      if (f2.field != 5 && f2.field != 10) continue;
      if (ox_want(w, &f2, 2, "a tensor attribute") || ox_tensor(w, f2.a, f2.b, what)) return -1;
    }
    if (r2 < 0) return -1;
  }
  return r;
}

static int ox_graph(ox_walk *w, uint64_t start, uint64_t end) {
  char what[64];
  ox_field f, f2;
  int r, r2;
  ox_iter it = ox_fields(start, end, GRAPH, GRAPH_REFUSED, "graph");
  while ((r = ox_next(w, &it, &f)) > 0) {
    const char *name = ox_lookup(GRAPH, f.field);
    if (f.field == 1 || f.field == 5 || (f.field >= 11 && f.field <= 14) || f.field == 16) {
      snprintf(what, sizeof what, "graph.%s", name);
      if (ox_want(w, &f, 2, what)) return -1;
    }
    if (f.field == 1) {
      if (ox_node(w, f.a, f.b)) return -1;
    } else if (f.field == 5) {
      if (ox_tensor(w, f.a, f.b, "the initializers")) return -1;
    } else if (f.field >= 11 && f.field <= 13) {
      snprintf(what, sizeof what, "graph %s", name);
      if (ox_value_info(w, f.a, f.b, what)) return -1;
    } else if (f.field == 14) { /* TensorAnnotation: a tensor name and string pairs */
      ox_iter it2 = ox_fields(f.a, f.b, ANNOTATION, NONE, "quantization annotation");
      while ((r2 = ox_next(w, &it2, &f2)) > 0)
        if (f2.field == 2 && ox_flat(w, f2.a, f2.b, ENTRY, "quantization annotation")) return -1;
      if (r2 < 0) return -1;
    } else if (f.field == 16) {
      if (ox_flat(w, f.a, f.b, ENTRY, "graph metadata")) return -1;
    }
  }
  return r;
}

KBP_INTERNAL kbp_status kbpi_check_graph(kbp_bundle *kb, const char *part, const uint8_t *buf, uint64_t n) {
  ox_walk w = {kb, part, buf, 0, 0, 0};
  uint64_t graphs = 0;
  char what[64], shown[400];
  ox_field f, f2;
  int r, r2;
  if (n > MAX_GRAPH_BYTES)
    return kbpi_invalid(kb, part, "%llu bytes exceeds the %llu-byte graph limit", (unsigned long long)n,
                        (unsigned long long)MAX_GRAPH_BYTES);
  ox_iter it = ox_fields(0, n, MODEL, MODEL_REFUSED, "model");
  while ((r = ox_next(&w, &it, &f)) > 0) {
    if (f.field == 7 || f.field == 8 || f.field == 14) {
      snprintf(what, sizeof what, "model.%s", ox_lookup(MODEL, f.field));
      if (ox_want(&w, &f, 2, what)) return KBP_ERR_INVALID;
    }
    if (f.field == 7) {
      if (++graphs > 1) return kbpi_invalid(kb, part, "model has more than one graph");
      if (ox_graph(&w, f.a, f.b)) return KBP_ERR_INVALID;
    } else if (f.field == 8) {
      const uint8_t *domain = (const uint8_t *)"";
      size_t domain_len = 0;
      ox_iter it2 = ox_fields(f.a, f.b, OPSET, NONE, "opset_import");
      while ((r2 = ox_next(&w, &it2, &f2)) > 0)
        if (f2.field == 1 && ox_text(&w, &f2, &domain, &domain_len)) return KBP_ERR_INVALID;
      if (r2 < 0) return KBP_ERR_INVALID;
      if (!(domain_len == 0 || (domain_len == 7 && memcmp(domain, "ai.onnx", 7) == 0))) {
        ox_repr(domain, domain_len, shown, sizeof shown);
        return kbpi_invalid(kb, part, "model imports operator domain %s (custom ops): only the default ONNX domain is allowed",
                            shown);
      }
    } else if (f.field == 14) {
      if (ox_flat(&w, f.a, f.b, ENTRY, "model metadata")) return KBP_ERR_INVALID;
    }
  }
  if (r < 0) return KBP_ERR_INVALID;
  if (!graphs) return kbpi_invalid(kb, part, "not an ONNX model (no graph)");
  if (!w.nodes) return kbpi_invalid(kb, part, "the graph has no nodes");
  return KBP_OK;
}
