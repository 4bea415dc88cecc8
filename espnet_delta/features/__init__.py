"""The feature cache: SSL feature streams extracted once, into sharded, resumable kaldiio ark/scp files.

One pass over a data dir runs every upstream of an extraction config (the
reference's fine-tuned model and, per other model, its pre-trained and fine-tuned
models) and stores per utterance ONE matrix ``(T, sum D_s)``: the streams of
:meth:`SSLEmbeddingExtractor.stream_names` side by side -- the reference's E_ft, then
per other model E_delta = E_ft - E_pt (taken in float32, rounded once to the storage
dtype) and E_ft. :mod:`espnet_delta.features.layout`
(:class:`~espnet_delta.features.layout.FeatureLayout`) slices it back into streams.
Upstreams with bit-identical CNN feature encoders run the CNN once per batch; the next
batch's audio is read in a background thread while the current one is computed.

Output directory (``dump/feats/<set>/``)::

    layout.json          format, stream names and columns, dtype, autocast, layer, hidden_norm,
                         mode, frame shift, the model specs with their checkpoints' paths,
                         sizes, mtimes
    shards.json          a fingerprint of the utterance list (wav.scp) and the current split
                         (num_shards; complete shards kept from a split with another count)
    feats.<k>.ark        shard k = 1..num_shards: the matrices (float32 Kaldi "FM", or float16
                         as kaldiio's NPY-in-ark record with --feats_fp16)
    feats.<k>.shape      "utt T,D" for shard k
    feats.<k>.sum        JSON: size, mtime and CRC-32 of the ark, CRC-32 of the shape and scp
                         files and of layout.json as the shard was written (:mod:`.integrity`)
    feats.<k>.scp        "utt <out_dir>/feats.<k>.ark:<offset>": written LAST, by rename,
                         so a shard is complete iff its scp exists
    feats.scp            all shards merged, sorted by utterance id (C byte order)
    feats_shape          "utt T,D" (ESPnet's csv shape files: the samplers sort by T and
                         the numel sampler counts T*D elements per utterance)
    utt2num_frames       "utt T"

The merged files are written by whichever call finds every shard complete (so the
last of num_shards parallel ``--shard k`` calls merges), or by ``--merge_only``; ``feats.scp``
is written last. Utterances are sorted by id and dealt round-robin into shards
(utterance i goes to shard i % num_shards + 1). A shard being written holds an exclusive
lock (``.feats.<k>.lock``); a killed run leaves ``*.tmp`` files or an ark without
scp, which the next run removes before redoing that shard. Within a shard,
utterances are processed longest first in batches of at most ``batch_size``
utterances and ``batch_seconds`` of padded audio; each utterance's matrix is trimmed
to its own frame count and written as soon as its batch is done, so memory is
bounded by the batch (two batches of audio, one of features), not by the corpus.

The ark paths in the scp files are ``out_dir`` as given: relative to the recipe
directory when ``out_dir`` is relative (ESPnet's convention), so run training from
there. A redone shard is byte-identical to an uninterrupted run with the same batch
settings, device and number of threads; another thread count changes values by
about 1e-6, another batch composition by up to about 1e-4 (float summation order).

An existing ``out_dir`` is reused only when its layout.json matches the config
(layout format, stream names, dtype, autocast, mode, layer, hidden_norm, and each
checkpoint's absolute path, size and mtime: a retrained checkpoint is a different
model) and shards.json the data (same utterances and paths). Otherwise the call fails
naming the file and the differing keys; ``overwrite`` deletes the earlier features
first. The shard count is no part of that identity: a merged cache is reused with any
count, and an unfinished one extracted with another count is resumed, its complete
shards kept and the utterances they lack split into new shards numbered after them
(:func:`.shards.plan_shards`; a resumed shard with other batch companions may differ
by the batch-composition amount above).

Reuse checks the cache first (:mod:`.integrity`): each complete shard's files against
its ``.sum`` (sizes always; an ark's CRC-32 when its size or time changed, or always with
``full_check``), the merged files against the shards, layout.json against the CRC-32 the
shards recorded. A damaged shard is deleted and extracted again alone, damaged merged
files are merged again, an edited layout.json is written again from the config; each
with one warning naming the file. A full disk stops the extraction with one line naming
the file and the space the unfinished shards need; the partial shard is removed.

Modules: :mod:`.layout` (which columns hold which stream; read side),
:mod:`.config` (what to extract, and the identity checks of an existing cache),
:mod:`.audio` (wav.scp items, reading and batching audio), :mod:`.shards` (shard
files, locks, the split, merging), :mod:`.integrity` (checksums) and :mod:`.extract`
(the driver).

"""
