"""The producer's partitioner sends every key where Kafka's default partitioner (aiokafka's, and Java's) does."""

from __future__ import annotations

import random

from aiokafka.partitioner import DefaultPartitioner
from aiokafka.partitioner import murmur2 as reference_murmur2

from docbus.broker.partitioner import default_partition, murmur2


def test_murmur2_matches_kafkas_for_every_key_length() -> None:
    rng = random.Random(102)
    for length in range(0, 130):
        for _ in range(25):
            key = rng.randbytes(length)
            assert murmur2(key) == reference_murmur2(key) & 0xFFFFFFFF, key


def test_known_values_from_the_java_client() -> None:
    # org.apache.kafka.common.utils.UtilsTest#testMurmur2 (signed there; unsigned here).
    cases = {
        b"21": -973932308,
        b"foobar": -790332482,
        b"a-little-bit-long-string": -985981536,
        b"a-little-bit-longer-string": -1486304829,
        b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
        bytes([ord("a"), ord("b"), ord("c")]): 479470107,
    }
    for key, signed in cases.items():
        assert murmur2(key) == signed & 0xFFFFFFFF, key


def test_partitions_match_aiokafkas_default_partitioner() -> None:
    rng = random.Random(16)
    reference = DefaultPartitioner()
    for partitions in (1, 2, 3, 7, 12, 50):
        all_partitions = list(range(partitions))
        for _ in range(300):
            key = f"000.00.00.G22,2026/11/27,{rng.randrange(10**6)}/UBND".encode()
            assert default_partition(key, all_partitions, all_partitions) == reference(
                key, all_partitions, all_partitions
            )


def test_a_record_without_a_key_goes_to_an_available_partition() -> None:
    assert {default_partition(None, [0, 1, 2], [2]) for _ in range(50)} == {2}
    assert {default_partition(None, [0, 1, 2], []) for _ in range(200)} == {0, 1, 2}
