"""The TB decoders a scenario can name (``link.decoder``): a registry of constructors, each a block with Sionna's
``TBDecoder`` call contract (LLRs [..., n] in, information bits [..., tb_size] and CRC flags out).

- ``sionna-bp``: Sionna's stock flooding BP (boxplus-phi), the BLER reference;
- ``layered-oms`` (default): :class:`~sim.phy.ldpc.LayeredMinSumDecoder`, layered offset min-sum, early stop;
- ``layered-oms-full``: the same without early stopping;
- ``sionna-layered-oms``: Sionna's ``LDPC5GDecoder`` doing ``layered-oms-full``'s work (the bench's reference);
- ``layered-oms-frames``: :class:`~sim.phy.ldpc_frames.FrameParallelMinSumDecoder` in float32, 16 codewords at a
  time, bit-identical to ``layered-oms-full`` (for many code blocks per call: a bench, large TBs);
- ``layered-oms-int16``: the same in 16-bit fixed point (BLER within statistical error of the float decoder's).
"""

from __future__ import annotations

from functools import partial

from sionna.phy import Block
from sionna.phy.fec.ldpc import LDPC5GDecoder
from sionna.phy.nr import TBDecoder, TBEncoder

from sim.phy.ldpc import LayeredTBDecoder
from sim.phy.ldpc_frames import FrameParallelMinSumDecoder


def _sionna_bp(encoder: TBEncoder, num_iter: int = 20, precision=None, device=None) -> Block:
    """Sionna's stock decoder: flooding BP with boxplus-phi check updates, the BLER reference."""
    return TBDecoder(encoder, num_bp_iter=num_iter, cn_update="boxplus-phi", precision=precision, device=device)


def _sionna_layered_oms(encoder: TBEncoder, num_iter: int = 16, precision=None, device=None) -> Block:
    """Sionna's own decoder doing the work of ``layered-oms`` without early stopping: ``LDPC5GDecoder`` with
    offset min-sum check updates (offset 0.5), ``cn_schedule="layered"`` (one layer per lifted base-graph
    row) and ``num_iter`` iterations for every codeword (Sionna has no early stop). The like-for-like
    reference of ``tokensim bench --only digital``.
    """
    # TBDecoder does not pass a schedule on to its LDPC stage; LayeredTBDecoder builds that stage with one.
    check_rule = dict(cn_update="offset-minsum", cn_schedule="layered")
    return LayeredTBDecoder(encoder, num_iter, LDPC5GDecoder, precision=precision, device=device, **check_rule)


def _layered_oms_full(encoder: TBEncoder, num_iter: int = 16, precision=None, device=None) -> Block:
    """``layered-oms`` without early stopping: every codeword runs ``num_iter`` iterations."""
    return LayeredTBDecoder(encoder, num_iter=num_iter, early_stop=False, precision=precision, device=device)


def _layered_oms(encoder: TBEncoder, num_iter: int = 16, precision=None, device=None) -> Block:
    """Layered offset min-sum (beta = 0.5) with early stopping.

    16 layered iterations put the SNR of 10 % BLER within 0.1 dB of ``sionna-bp`` (20 flooding
    iterations) for QPSK 0.3, 16-QAM 0.5 and 64-QAM 0.75 codes (measured on the same noise); with
    20 the layered decoder is up to 0.2 dB better than the reference instead.
    """
    return LayeredTBDecoder(encoder, num_iter=num_iter, precision=precision, device=device)


def _frames(encoder: TBEncoder, num_iter: int = 16, precision=None, device=None, message_format="float32") -> Block:
    """``layered-oms-full``'s work, 16 codewords at a time, in ``message_format`` messages."""
    return LayeredTBDecoder(
        encoder, num_iter, FrameParallelMinSumDecoder, precision=precision, device=device, message_format=message_format
    )


# name -> constructor(encoder, num_iter=..., precision=None, device=None) of a block with TBDecoder's contract
TB_DECODERS = {
    "sionna-bp": _sionna_bp,
    "layered-oms": _layered_oms,
    "layered-oms-full": _layered_oms_full,
    "sionna-layered-oms": _sionna_layered_oms,
    "layered-oms-frames": partial(_frames, message_format="float32"),
    "layered-oms-int16": partial(_frames, message_format="int16"),
}
DEFAULT_TB_DECODER = "layered-oms"


def tb_decoder(encoder: TBEncoder, algorithm: str = DEFAULT_TB_DECODER, num_iter: int | None = None) -> Block:
    r"""The transport-block decoder ``algorithm`` of :data:`TB_DECODERS` for ``encoder``'s blocks.

    :param encoder: the ``TBEncoder`` of the transport blocks (its precision and device are used)
    :param algorithm: a name in :data:`TB_DECODERS`
    :param num_iter: decoder iterations at most; ``None`` for the algorithm's default
        (20 for ``sionna-bp``, 16 for ``layered-oms``)

    The block takes llr [..., encoder.n], float (Sionna's sign, log p(1)/p(0)), and
    returns bits [..., encoder.tb_size], float 0/1, and crc_ok [...], bool.

    >>> decoder = tb_decoder(encoder)
    >>> bits, crc_ok = decoder(llr)
    """
    if algorithm not in TB_DECODERS:
        raise KeyError(f"ldpc decoder {algorithm!r} is not one of {', '.join(TB_DECODERS)}")
    iterations = {} if num_iter is None else {"num_iter": num_iter}
    return TB_DECODERS[algorithm](encoder, precision=encoder.precision, device=encoder.device, **iterations)
