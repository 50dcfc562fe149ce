//! The file types `llama-quantize` writes, and the type each tensor gets in them.
//!
//! A "Q4_K_M" file is not all Q4_K: llama.cpp spends more bits where quantization hurts most
//! (the value projections and the feed-forward down projections of a chosen set of layers, the
//! output matrix) and falls back to a 32-value type where a row is not a whole number of
//! 256-value superblocks. The rules here are llama.cpp's for a Llama-architecture model without
//! experts and without an importance matrix, so a file written here holds the same types,
//! tensor for tensor, as the one `llama-quantize` writes from the same input.

use crate::error::{Error, Result};
use crate::kernels::WeightKind;

/// One of `llama-quantize`'s output types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileType {
    /// `llama-quantize`'s name, e.g. `"Q4_K_M"`.
    pub name: &'static str,
    /// llama.cpp's `llama_ftype`, stored as `general.file_type`.
    pub id: u32,
    /// ggml's name of the type most matrices get.
    base: &'static str,
}

const fn file_type(name: &'static str, id: u32, base: &'static str) -> FileType {
    FileType { name, id, base }
}

/// Every file type this writer produces, smallest first within each family.
pub const FILE_TYPES: [FileType; 18] = [
    file_type("Q2_K", 10, "q2_K"),
    file_type("Q2_K_S", 21, "q2_K"),
    file_type("Q3_K_S", 11, "q3_K"),
    file_type("Q3_K_M", 12, "q3_K"),
    file_type("Q3_K_L", 13, "q3_K"),
    file_type("Q4_0", 2, "q4_0"),
    file_type("Q4_1", 3, "q4_1"),
    file_type("Q4_K_S", 14, "q4_K"),
    file_type("Q4_K_M", 15, "q4_K"),
    file_type("Q5_0", 8, "q5_0"),
    file_type("Q5_1", 9, "q5_1"),
    file_type("Q5_K_S", 16, "q5_K"),
    file_type("Q5_K_M", 17, "q5_K"),
    file_type("Q6_K", 18, "q6_K"),
    file_type("Q8_0", 7, "q8_0"),
    file_type("F16", 1, "f16"),
    file_type("BF16", 32, "bf16"),
    file_type("F32", 0, "f32"),
];

/// Names `llama-quantize` also accepts, for the mix most people mean.
const ALIASES: [(&str, &str); 3] = [("Q3_K", "Q3_K_M"), ("Q4_K", "Q4_K_M"), ("Q5_K", "Q5_K_M")];

impl FileType {
    /// By name, any case (`q4_k_m`, `Q8_0`, `bf16`; `q4_k` is Q4_K_M as in llama-quantize).
    pub fn by_name(name: &str) -> Result<FileType> {
        let wanted = name.trim();
        let wanted = ALIASES
            .iter()
            .find(|(alias, _)| alias.eq_ignore_ascii_case(wanted))
            .map_or(wanted, |(_, to)| to);
        FILE_TYPES
            .iter()
            .copied()
            .find(|t| t.name.eq_ignore_ascii_case(wanted))
            .ok_or_else(|| {
                let known: Vec<_> = FILE_TYPES.iter().map(|t| t.name).collect();
                Error::invalid(format!(
                    "unknown file type {name:?}; known: {}",
                    known.join(", ")
                ))
            })
    }

    /// The type most of its matrices get.
    pub fn base_kind(&self) -> &'static WeightKind {
        kind(self.base)
    }

    fn is(&self, name: &str) -> bool {
        self.name == name
    }
}

fn kind(name: &str) -> &'static WeightKind {
    WeightKind::by_name(name).expect("every file type names a registered weight type")
}

/// What a tensor does in the model, as far as the mixes care.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Output,
    TokenEmbedding,
    AttentionV,
    AttentionOutput,
    FeedForwardDown,
    Other,
}

fn role(name: &str) -> Role {
    if name == "output.weight" {
        Role::Output
    } else if name == "token_embd.weight" {
        Role::TokenEmbedding
    } else if name.contains("attn_v.weight") {
        Role::AttentionV
    } else if name.contains("attn_output.weight") {
        Role::AttentionOutput
    } else if name.contains("ffn_down") {
        Role::FeedForwardDown
    } else {
        Role::Other
    }
}

/// The type of each tensor of one file, decided in the order llama.cpp writes them (see
/// [`tensor_order`]): the mixes count value and down projections as they go.
pub struct MixPlan {
    file_type: FileType,
    /// Query heads per key/value head.
    heads_per_kv_head: usize,
    layers: usize,
    value_projections: usize,
    tied_embeddings: bool,
    value_projections_seen: usize,
    down_projections_seen: usize,
}

impl MixPlan {
    /// For a model whose tensors are `names`.
    pub fn new(
        file_type: FileType,
        names: &[&str],
        layers: usize,
        heads_per_kv_head: usize,
    ) -> Self {
        MixPlan {
            file_type,
            heads_per_kv_head,
            layers,
            value_projections: names.iter().filter(|n| role(n) == Role::AttentionV).count(),
            tied_embeddings: !names.contains(&"output.weight"),
            value_projections_seen: 0,
            down_projections_seen: 0,
        }
    }

    /// The type `name` (shape outermost first) gets; `None` keeps the tensor as stored (norms
    /// and other vectors).
    pub fn tensor_type(&mut self, name: &str, shape: &[usize]) -> Option<&'static WeightKind> {
        if shape.len() < 2 || !name.ends_with("weight") || name.contains("_norm.weight") {
            return None;
        }
        let base = self.file_type.base_kind();
        if base.is_float() {
            return Some(base);
        }
        let cols = shape[shape.len() - 1];
        Some(quantization_fallback(self.mixed(base, name, cols), cols))
    }

    /// llama.cpp's choice for a tensor before the fallback for its row length.
    fn mixed(&mut self, base: &'static WeightKind, name: &str, cols: usize) -> &'static WeightKind {
        let ft = self.file_type;
        let n = self.layers;
        let role = role(name);
        if role == Role::Output || (self.tied_embeddings && role == Role::TokenEmbedding) {
            // The output matrix gets 6 bits unless the file is Q8_0 (or the row does not hold
            // whole blocks of the base type, where Q8_0 is the safe choice).
            return if !cols.is_multiple_of(base.block_elements) {
                kind("q8_0")
            } else if base.name != "q8_0" {
                kind("q6_K")
            } else {
                base
            };
        }
        let chosen = match role {
            Role::AttentionV => {
                let i = self.value_projections_seen;
                self.value_projections_seen += 1;
                let gqa4 = self.heads_per_kv_head >= 4;
                if ft.is("Q2_K") {
                    Some(if gqa4 { "q4_K" } else { "q3_K" })
                } else if ft.is("Q2_K_S") && gqa4 {
                    Some("q4_K")
                } else if ft.is("Q3_K_M") {
                    Some(if i < 2 { "q5_K" } else { "q4_K" })
                } else if ft.is("Q3_K_L") {
                    Some("q5_K")
                } else if (ft.is("Q4_K_M") || ft.is("Q5_K_M"))
                    && more_bits_of(i, self.value_projections)
                {
                    Some("q6_K")
                } else if ft.is("Q4_K_S") && i < 4 {
                    Some("q5_K")
                } else {
                    None
                }
            }
            Role::FeedForwardDown => {
                let i = self.down_projections_seen;
                self.down_projections_seen += 1;
                if ft.is("Q2_K") {
                    Some("q3_K")
                } else if ft.is("Q2_K_S") && i < n / 8 {
                    Some("q4_K")
                } else if ft.is("Q3_K_M") {
                    Some(if i < n / 16 { "q5_K" } else { "q4_K" })
                } else if ft.is("Q3_K_L") {
                    Some("q5_K")
                } else if (ft.is("Q4_K_M") || ft.is("Q5_K_M")) && more_bits_of(i, n) {
                    Some("q6_K")
                } else if ft.is("Q4_K_S") && i < n / 8 {
                    Some("q5_K")
                } else {
                    None
                }
            }
            Role::AttentionOutput => match ft.name {
                "Q2_K" => Some("q3_K"),
                "Q3_K_M" => Some("q4_K"),
                "Q3_K_L" => Some("q5_K"),
                _ => None,
            },
            Role::Output | Role::TokenEmbedding | Role::Other => None,
        };
        chosen.map_or(base, kind)
    }
}

/// llama.cpp's `use_more_bits`: the first and last eighth of the layers, and every third one
/// between them (`i - n / 8` cannot underflow: the first test holds for `i < n / 8`).
fn more_bits_of(i: usize, n: usize) -> bool {
    i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2
}

/// The type a row of `cols` values asked to be `kind` gets: a K-quant whose 256-value
/// superblocks do not tile the row falls back to a 32-value type of about the same size (as
/// for SmolLM2-135M's and 360M's 576- and 960-wide rows), and a row no block type tiles to F16.
pub fn quantization_fallback(kind: &'static WeightKind, cols: usize) -> &'static WeightKind {
    if cols.is_multiple_of(kind.block_elements) {
        return kind;
    }
    let fallback = match kind.name {
        "q2_K" | "q3_K" => self::kind("q4_0"),
        "q4_K" => self::kind("q5_0"),
        "q5_K" => self::kind("q5_1"),
        "q6_K" => self::kind("q8_0"),
        _ => kind,
    };
    if cols.is_multiple_of(fallback.block_elements) {
        fallback
    } else {
        self::kind("f16")
    }
}

/// llama.cpp's order of a model's tensors: those outside the blocks first, then block by
/// block, by name within each.
pub fn tensor_order(a: &str, b: &str) -> std::cmp::Ordering {
    let layer =
        |n: &str| -> Option<usize> { n.strip_prefix("blk.")?.split('.').next()?.parse().ok() };
    // `None` (outside the blocks) sorts first.
    layer(a).cmp(&layer(b)).then_with(|| a.cmp(b))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn names(layers: usize) -> Vec<String> {
        let mut n = vec![
            "token_embd.weight".to_string(),
            "output_norm.weight".to_string(),
        ];
        for l in 0..layers {
            for part in [
                "attn_norm",
                "attn_q",
                "attn_k",
                "attn_v",
                "attn_output",
                "ffn_norm",
                "ffn_gate",
                "ffn_up",
                "ffn_down",
            ] {
                n.push(format!("blk.{l}.{part}.weight"));
            }
        }
        n.sort_by(|a, b| tensor_order(a, b));
        n
    }

    /// The types of a model's tensors in `ft`, by name.
    fn plan(
        ft: &str,
        layers: usize,
        hidden: usize,
        ffn: usize,
        gqa: usize,
    ) -> Vec<(String, String)> {
        let names = names(layers);
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let mut plan = MixPlan::new(FileType::by_name(ft).unwrap(), &refs, layers, gqa);
        names
            .iter()
            .map(|n| {
                let shape = if n.contains("norm") {
                    vec![hidden]
                } else if n.contains("ffn_down") {
                    vec![hidden, ffn]
                } else if n.contains("ffn") {
                    vec![ffn, hidden]
                } else {
                    vec![hidden, hidden]
                };
                let t = plan.tensor_type(n, &shape).map_or("kept", |k| k.name);
                (n.clone(), t.to_string())
            })
            .collect()
    }

    fn type_of<'a>(plan: &'a [(String, String)], name: &str) -> &'a str {
        &plan.iter().find(|(n, _)| n == name).unwrap().1
    }

    #[test]
    fn order_is_llama_cpps() {
        let n = names(11);
        assert_eq!(n[0], "output_norm.weight");
        assert_eq!(n[1], "token_embd.weight");
        assert_eq!(n[2], "blk.0.attn_k.weight");
        assert!(
            n.iter().position(|x| x == "blk.2.attn_k.weight")
                < n.iter().position(|x| x == "blk.10.attn_k.weight")
        );
    }

    #[test]
    fn q4_k_m_of_the_135m_shape_matches_llama_quantize() {
        // What llama-quantize wrote for SmolLM2-135M (30 layers, 576 wide, FFN 1536) Q4_K_M:
        // 576-wide rows fall back from Q4_K to Q5_0, from Q6_K to Q8_0; FFN-down rows (1536)
        // hold superblocks.
        let p = plan("q4_k_m", 30, 576, 1536, 3);
        assert_eq!(type_of(&p, "token_embd.weight"), "q8_0");
        assert_eq!(type_of(&p, "output_norm.weight"), "kept");
        assert_eq!(type_of(&p, "blk.0.attn_q.weight"), "q5_0");
        assert_eq!(type_of(&p, "blk.0.attn_v.weight"), "q8_0");
        assert_eq!(type_of(&p, "blk.4.attn_v.weight"), "q5_0");
        assert_eq!(type_of(&p, "blk.0.ffn_down.weight"), "q6_K");
        assert_eq!(type_of(&p, "blk.4.ffn_down.weight"), "q4_K");
        assert_eq!(type_of(&p, "blk.5.ffn_down.weight"), "q6_K");
        assert_eq!(type_of(&p, "blk.29.ffn_down.weight"), "q6_K");
    }

    #[test]
    fn mixes_of_a_2048_wide_model() {
        let p = plan("q4_k_m", 24, 2048, 8192, 1);
        assert_eq!(type_of(&p, "token_embd.weight"), "q6_K");
        assert_eq!(type_of(&p, "blk.3.attn_q.weight"), "q4_K");
        let q6: Vec<usize> = (0..24)
            .filter(|l| type_of(&p, &format!("blk.{l}.attn_v.weight")) == "q6_K")
            .collect();
        assert_eq!(q6, [0, 1, 2, 5, 8, 11, 14, 17, 20, 21, 22, 23]);
        let p = plan("q3_k_m", 24, 2048, 8192, 1);
        assert_eq!(type_of(&p, "blk.0.attn_v.weight"), "q5_K");
        assert_eq!(type_of(&p, "blk.2.attn_v.weight"), "q4_K");
        assert_eq!(type_of(&p, "blk.0.ffn_down.weight"), "q5_K");
        assert_eq!(type_of(&p, "blk.2.ffn_down.weight"), "q4_K");
        assert_eq!(type_of(&p, "blk.2.attn_output.weight"), "q4_K");
        assert_eq!(type_of(&p, "blk.2.ffn_up.weight"), "q3_K");
        let p = plan("q2_k", 24, 2048, 8192, 4);
        assert_eq!(type_of(&p, "blk.2.attn_v.weight"), "q4_K");
        assert_eq!(type_of(&p, "blk.2.ffn_down.weight"), "q3_K");
        assert_eq!(type_of(&p, "blk.2.ffn_up.weight"), "q2_K");
        let p = plan("q8_0", 24, 2048, 8192, 1);
        assert_eq!(type_of(&p, "token_embd.weight"), "q8_0");
        let p = plan("bf16", 24, 2048, 8192, 1);
        assert_eq!(type_of(&p, "token_embd.weight"), "bf16");
        assert_eq!(type_of(&p, "output_norm.weight"), "kept");
    }

    #[test]
    fn names_and_fallbacks() {
        assert_eq!(FileType::by_name("q4_k").unwrap().name, "Q4_K_M");
        assert_eq!(FileType::by_name(" Bf16 ").unwrap().id, 32);
        assert!(FileType::by_name("q4_k_x").is_err());
        assert_eq!(quantization_fallback(kind("q6_K"), 576).name, "q8_0");
        assert_eq!(quantization_fallback(kind("q4_0"), 48).name, "f16");
        assert_eq!(quantization_fallback(kind("q4_K"), 512).name, "q4_K");
    }
}
