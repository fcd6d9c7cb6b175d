"""The functional API (STYLE.md layer 2): torch-style functions that validate their inputs once, choose
the backend (tritonrnn._backend) and call the Triton kernels or the torch path.

Data flows one way: tritonrnn.nn → tritonrnn.functional → tritonrnn.kernels.
Layout convention: sequence tensors are [B, T, C] in logical order with arbitrary strides (a transposed
time-major view is fine); outputs keep the input's memory layout (torch.empty_like).
"""
