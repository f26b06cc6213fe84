"""Edge inference: the ONNX models (equipment anomaly, audience mood), their front end and their runtime."""
