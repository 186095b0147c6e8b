"""Leases in JetStream KV: which replica owns which live partition, and who leads.

Every replica of a service keeps a membership key (``m.<replica>``) alive in its
service's bucket; the bucket's TTL forgets a replica that stops renewing (SIGKILL, a
partition from NATS). Live partitions are spread over the members by rendezvous hashing,
so a member joining or leaving moves about 1/N of them. A partition is taken with an
atomic create of ``p.<n>`` and renewed by compare-and-set; the revision of the create is
the partition's **epoch**, which grows with every change of owner and fences off a late
message from a deposed owner (DESIGN.md §8). A single-owner role (the pricefeed's leader,
the orders venue) is the same thing with one key and no hashing: :class:`LeaderLease`.

An owner that could not renew for ``ttl - margin`` stops acting before its lease can
expire elsewhere (:meth:`Lease.valid`): self-fencing. The store is JetStream KV in every
process (:class:`NatsLeaseStore`); :class:`MemoryLeaseStore` is the same contract in one
process, for the framework's unit tests.
"""

from shared.leases.holders import (
    LeaderLease,
    Lease,
    LeaseHolder,
    PartitionLeases,
    default_replica_id,
    rendezvous_owner,
)
from shared.leases.stores import (
    DEFAULT_TTL_S,
    LeaseStore,
    LeaseTaken,
    MemoryLeaseStore,
    NatsLeaseStore,
)

__all__ = [
    "DEFAULT_TTL_S",
    "LeaderLease",
    "Lease",
    "LeaseHolder",
    "LeaseStore",
    "LeaseTaken",
    "MemoryLeaseStore",
    "NatsLeaseStore",
    "PartitionLeases",
    "default_replica_id",
    "rendezvous_owner",
]
