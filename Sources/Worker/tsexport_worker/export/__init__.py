"""The export op and its stages: inputs, trace, reference, AOTInductor, quantization and the serving-envelope guard."""
