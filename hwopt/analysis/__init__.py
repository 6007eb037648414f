"""Stage 3, analysis: reading a canonical graph without changing it.

``graph`` (onnx-graphsurgeon import/export, lookups), ``activations`` and ``layer_norm`` (patterns
however an exporter wrote them), ``blocks`` (IBN blocks, depthwise convs), ``channel_groups``
(tensors whose channels change together), ``sites`` (the named places rules apply), ``kernel``
(the descriptors of what a target executes), ``kernels`` (cutting a model into them),
``layout`` (a runtime's blocked-layout conversions), ``metrics`` (params, FLOPs, memory).
"""
