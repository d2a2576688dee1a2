"""The VERIFY.md of an evidence bundle: how to check it by hand and with the tools."""

from __future__ import annotations


def verify_md(
    *, model_id: str, origin: str, tree_size: int, vkey: str, witnesses: int, summary: bool
) -> str:
    summary_line = (
        "- `training_content_summary.json` / `.md`: the EU AI Act Art. 53(1)(d) summary\n"
        if summary
        else "- (no training-content summary: this gateway does not produce one)\n"
    )
    return f"""# Evidence bundle of {model_id}

What is in it:

- `dossier.json` / `dossier.md`: the technical dossier (EU AI Act Annex IV)
{summary_line}- `lineage.json`: the version's chain of parents down to the base model
- `events.jsonl`: every audit event about the model, its job, its data files and sources,
  one per line as `{{"event": {{...}}, "proof": {{"index", "tree_size", "hashes"}}}}`
- `checkpoint.txt`: the C2SP tlog-checkpoint signed note (origin `{origin}`, tree size
  {tree_size}) every proof leads to, with the witnesses' cosignature lines ({witnesses}
  witness key(s) configured when it was exported)
- `keys/log.vkey` (signed-note verifier key), `keys/log.pem`, `keys/witnesses.vkey`
- `MANIFEST.json`: the sha256 of every other member

## With the tools

    tunegate evidence verify BUNDLE.zip [--key LOG.vkey] [--witness VKEY ... --quorum K]
    python audit/verify_bundle.py BUNDLE.zip [--key LOG.vkey] [--witness VKEY ... --quorum K]

`audit/verify_bundle.py` is one file needing only Python 3.11 and `cryptography`; it reads
no tunegate code. Both exit 0 when every check holds and name the first part that fails.

**Trust the key, not the bundle.** The bundled `keys/log.vkey` only shows what the gateway
says its key is. Get the log's vkey from a source you trust (`GET /v1/audit/public-key`
earlier, your own records, a witness operator) and pass it with `--key`; pass witness
keys you trust with `--witness` and `--quorum`. The log key in use here was:

    {vkey}

## By hand

1. `checkpoint.txt` is `<origin>\\n<size>\\n<base64 root>\\n`, a blank line, then lines
   `— <name> base64(key ID || signature)`. The Ed25519 signature covers the three text lines;
   the key ID is `SHA-256(name || 0x0A || 0x01 || public key)[:4]` (c2sp.org/signed-note).
   Witness lines carry `key ID || 8-byte time || signature` over
   `cosignature/v1\\ntime <t>\\n` + the text (c2sp.org/tlog-cosignature, key type 0x04).
2. For each line of `events.jsonl`: encode `event` as canonical JSON (RFC 8785: keys
   sorted, no whitespace, non-ASCII as itself, integers only). The leaf hash is
   `SHA-256(0x00 || bytes)`; fold `hashes` in as RFC 6962 §2.1.1 inclusion proof of
   leaf `index` (= seq - 1) in a tree of `tree_size` leaves, interior nodes
   `SHA-256(0x01 || left || right)`. The result must be the checkpoint's root.
3. The sha256 of each member must be what `MANIFEST.json` lists (the manifest itself is
   not signed: the checkpoint is what the gateway signed, and the facts below are tied to
   it through the events).
4. Facts: `dossier.json` and `lineage.json` name model `{model_id}`; the dossier's audit
   events are exactly those in `events.jsonl` and its checkpoint is `checkpoint.txt`'s tree;
   each data file's sha256 in the dossier is the one its `file.uploaded` event records; the
   adapter sha256 is the one the `model.registered` event records (when the trail has it).
5. To check that the log was not rewritten since a checkpoint you kept, fetch
   `GET /v1/audit/consistency?first=<yours>&second={tree_size}` and run
   `tunegate audit verify-consistency`.
"""
