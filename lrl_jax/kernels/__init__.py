"""Attention kernels: every backend by op and platform, the shared online-softmax state and Pallas VJP wrapper.

Modules are named `<op>_<platform>`: ops "dense", "flash" (training attention) and "paged" (a decoding call's KV
prefix); platforms "xla" (any device), "triton" (GPU) and "mosaic" (TPU). `table.KERNELS` maps (op, platform) to the
implementation; the model picks an entry by name (`model/attention.py`). The kernels import nothing of the model:
they take q/k/v, the per-token mask metadata of `masks` and plain arrays.
"""
