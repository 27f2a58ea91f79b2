"""The search query encoder on ONNX Runtime: what the service runs for every /search.

`export_query_encoder` exports a champion's query tower (transformer, mean pooling and L2 normalisation in one
graph, LoRA adapters merged) with `torch.onnx.export`, optionally quantises its weights to int8 (ONNX Runtime's
dynamic quantisation, per channel), and keeps it only when its vectors match torch's on real text (cosine at least
MIN_COSINE for float32, INT8_MIN_COSINE for int8). ONNX Runtime encodes one query about 4x faster than torch on 2
CPU cores (5 vs 21 ms measured under load), int8 about 2x faster again (2.7 vs 5.7 ms, zero-shot MiniLM, cosine to
float32 0.992 mean, 0.982 min on 300 Home Depot queries); whether int8 costs ranking quality is what the serving
benchmark's NDCG check answers. The tokenizer is the tower's own fast Hugging Face tokenizer, saved beside the
graph.
"""

import copy
import json
import logging
import tempfile
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from onnxruntime.quantization import QuantType, quantize_dynamic
from transformers import AutoTokenizer

from core.errors import ShopError

logger = logging.getLogger(__name__)

MIN_COSINE = 0.9999  # float32 graph, same weights: anything lower is an export fault, not rounding
INT8_MIN_COSINE = 0.95  # int8 weights: rounding moves vectors a little (0.98 measured), a broken graph far more
MODEL_FILE, CONFIG_FILE = "model.onnx", "query_encoder.json"
INPUTS = ("input_ids", "attention_mask")


class OnnxQueryEncoder:
    """Texts in, unit vectors out, through an ONNX Runtime session on `threads` CPU threads."""

    def __init__(self, graph: bytes, tokenizer, max_length: int, threads: int):
        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
        # idle threads must not spin: they took the cores from the BM25 / FAISS work that follows each encode
        # (encode + hybrid ranking 9.5 ms with spinning, 5.4 ms without, 2 threads, in process)
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"])
        self.graph, self.tokenizer, self.max_length = graph, tokenizer, max_length

    def encode_queries(self, texts: list[str]) -> np.ndarray:
        """(len(texts), dim) float32 unit vectors; one padded batch, tokenised once."""
        batch = self.tokenizer(
            [str(t) for t in texts], padding=True, truncation=True, max_length=self.max_length, return_tensors="np"
        )
        return self.session.run(["vectors"], {name: batch[name].astype(np.int64) for name in INPUTS})[0]

    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / MODEL_FILE).write_bytes(self.graph)
        self.tokenizer.save_pretrained(folder)
        (folder / CONFIG_FILE).write_text(json.dumps({"max_length": self.max_length}) + "\n")

    @classmethod
    def load(cls, folder: Path, threads: int) -> "OnnxQueryEncoder":
        config = json.loads((folder / CONFIG_FILE).read_text())
        tokenizer = AutoTokenizer.from_pretrained(folder)
        return cls((folder / MODEL_FILE).read_bytes(), tokenizer, config["max_length"], threads)


def export_query_encoder(tower, check_texts: list[str], threads: int, int8: bool = False) -> OnnxQueryEncoder:
    """ONNX Runtime twin of `tower` (a training.models.TextTower), with int8 weights if `int8`; ShopError when it
    does not reproduce the tower's vectors for `check_texts` (cosine at least MIN_COSINE, or INT8_MIN_COSINE,
    each)."""
    tower = copy.deepcopy(tower).eval()
    if hasattr(tower.encoder, "merge_and_unload"):  # LoRA (peft): fold the adapters into the weights
        tower.encoder = tower.encoder.merge_and_unload()
    tower.encoder.set_attn_implementation("eager")  # the SDPA path exports a graph that is wrong when padded
    example = tower.tokenize(check_texts[:2])
    with tempfile.TemporaryDirectory(prefix="shopaug-onnx-") as tmp, torch.no_grad():
        path = Path(tmp) / MODEL_FILE
        torch.onnx.export(
            tower,
            tuple(example[name] for name in INPUTS),
            str(path),
            input_names=list(INPUTS),
            output_names=["vectors"],
            dynamic_axes={
                "input_ids": {0: "batch", 1: "tokens"},
                "attention_mask": {0: "batch", 1: "tokens"},
                "vectors": {0: "batch"},
            },
            opset_version=17,
            dynamo=False,
        )
        if int8:
            quantised = path.with_name("int8.onnx")
            quantize_dynamic(path, quantised, per_channel=True, weight_type=QuantType.QInt8)
            path = quantised
        encoder = OnnxQueryEncoder(path.read_bytes(), tower.tokenizer, tower.max_length, threads)
    cosine = float((encoder.encode_queries(check_texts) * tower.encode(check_texts)).sum(1).min())
    kind, floor = ("int8", INT8_MIN_COSINE) if int8 else ("float32", MIN_COSINE)
    if cosine < floor:
        raise ShopError(f"query encoder: the {kind} ONNX graph's vectors differ from torch's (min cosine {cosine:.6f})")
    logger.info(
        "query encoder: exported to ONNX (%s), min cosine to torch %.7f on %d texts", kind, cosine, len(check_texts)
    )
    return encoder
