"""Topic names of the MQTT contract v1, built in one place and checked for wildcard injection."""

from __future__ import annotations

import re

PREFIX = "kassad/v1"
ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
INVALID_REQUESTER = "_invalid"


def check_id(value: str, what: str) -> str:
    if not ID_RE.match(value):
        raise ValueError(f"{what} {value!r} must match [A-Za-z0-9_-]{{1,64}}")
    return value


class RegisterTopics:
    """Every topic of one register: ``kassad/v1/{store}/{reg}/…``."""

    def __init__(self, store: str, register: str) -> None:
        self.store = check_id(store, "store id")
        self.register = check_id(register, "register id")
        self.base = f"{PREFIX}/{store}/{register}"
        self.status = f"{self.base}/status"
        self.state = f"{self.base}/state"
        self.evt = f"{self.base}/evt"
        self.cmd_filter = f"{self.base}/cmd/+"
        self.ack_filter = f"{self.base}/ack/+"
        self.resync = f"{self.base}/ctl/resync"
        self.res_prefix = f"{self.base}/res/"

    @property
    def client_id(self) -> str:
        return f"{self.store}-{self.register}"

    def cmd(self, name: str) -> str:
        return f"{self.base}/cmd/{name}"

    def ack(self, consumer: str) -> str:
        return f"{self.base}/ack/{check_id(consumer, 'consumer id')}"

    def res(self, requester: str) -> str:
        if requester != INVALID_REQUESTER:
            check_id(requester, "requester id")
        return f"{self.res_prefix}{requester}"

    def command_name(self, topic: str) -> str | None:
        """The command name of a ``cmd/{name}`` topic of this register, else None."""
        head = f"{self.base}/cmd/"
        return topic[len(head) :] if topic.startswith(head) else None

    def consumer_of_ack(self, topic: str) -> str | None:
        head = f"{self.base}/ack/"
        return topic[len(head) :] if topic.startswith(head) else None

    def is_own_response_topic(self, topic: str) -> bool:
        """Replies go only under our own ``res/``: a command cannot make us publish elsewhere."""
        rest = topic[len(self.res_prefix) :] if topic.startswith(self.res_prefix) else ""
        return bool(rest) and all(ID_RE.match(part) for part in rest.split("/"))


def store_events_filter(store: str) -> str:
    return f"{PREFIX}/{check_id(store, 'store id')}/+/evt"


def aggregator_status(store: str, agg_id: str) -> str:
    return f"{PREFIX}/{check_id(store, 'store id')}/_agg/{check_id(agg_id, 'aggregator id')}/status"
