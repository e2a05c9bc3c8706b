"""The demo's trained model family: synthetic skills in the real benchmarks' formats, a tiny base
pretrained on a generic mix, and three experts fine-tuned from it (math, code, instruction following);
and the adapted experts, a LoRA adapter of the base per domain on its expert's data (`lora.py`).
"""
