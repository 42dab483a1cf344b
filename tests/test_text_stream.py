"""Tokens to text as a stream (`vas_jax.text_stream`): what the server sends piece by piece."""


def test_text_stream_never_splits_a_character_and_cuts_before_a_stop_string():
    """Byte-level tokens (an emoji is four of them): no piece holds half a character, the pieces join
    into the answer, and the answer ends before the stop string, even one split across tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from vas_jax.text_stream import TextStream

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(["hello world"], trainers.BpeTrainer(initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe)
    ids = tok("héllo 🙂 wörld ENDING tail")["input_ids"]
    assert len(ids) > len("héllo 🙂 wörld ENDING tail")  # multi-byte characters span tokens
    ts = TextStream(tok, stop=["END"])
    pieces = [ts.push(t) for t in ids] + [ts.flush()]
    assert "".join(pieces) == "héllo 🙂 wörld " and ts.stopped
    assert not any("\ufffd" in p for p in pieces)
    plain = TextStream(tok)
    assert "".join([plain.push(t) for t in ids] + [plain.flush()]) == "héllo 🙂 wörld ENDING tail"
