"""Models, training loop, evaluation harness and baselines, MLflow logging and registry promotion."""
