"""Curation: from raw transcripts and noisy captions to training pairs (`videolang curate ...`).

One module per step, in pipeline order: `segment` (transcripts -> narration units), `scenes` (scene cuts
-> clip segments), `filter` (drop pairs a trained model scores low), `realign` (re-time narration by
optimal transport), `dedup` (near-duplicate captions), `enrich` (hand-off to an external LLM and back).
`io` reads and writes the manifests they transform; `scoring` embeds clips and captions with a model.
"""
