"""Circuits as data and their interpreters in torch: gates and circuits (:mod:`.circuit`, with a
batched statevector simulator), the circuit descriptions of frames of any width (:mod:`.frames`),
the fused frame kernel (:mod:`.frame_kernel`) and the per-token program of QNNs
(:mod:`.token_program`). Parametrizations (:mod:`tnpeft.params`), the Qiskit compiler
(:mod:`tnpeft.quantum`) and the circuit drawings (:mod:`tnpeft.draw`) read circuits from here."""
