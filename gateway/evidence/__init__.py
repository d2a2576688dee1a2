"""Evidence bundles (issue 16 §5): one zip holding a model version's dossier, its
training-content summary and lineage, every audit event about it with an inclusion proof
against one C2SP checkpoint, the keys and a VERIFY.md, checkable offline by
`tunegate evidence verify` and by the standalone audit/verify_bundle.py."""
