"""ONNX export and onnxruntime INT8 static quantization (QAT fake-quant will live here too)."""
