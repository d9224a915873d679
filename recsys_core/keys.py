"""Every topic name and Redis key, defined once."""

from __future__ import annotations

from dataclasses import dataclass

from recsys_core.events import EventType

TOPICS: dict[EventType, str] = {
    "rating": "ratings.v1",
    "watch": "watches.v1",
    "catalog": "catalog.v1",
    "follow": "follows.v1",
}


def dead_letter_topic(topic: str) -> str:
    return f"{topic}.dlq"


@dataclass(frozen=True)
class Keys:
    """Redis key names under one prefix (tests use their own prefixes)."""

    prefix: str = "recsys"

    def history(self, user_id: str) -> str:
        """Hash movie_id → packed pair state (latest rating, best completion, times)."""
        return f"{self.prefix}:uh:{{{user_id}}}"

    def recent(self, user_id: str) -> str:
        """Sorted set movie_id → last interaction time (the cap and the order)."""
        return f"{self.prefix}:ur:{{{user_id}}}"

    def dropped(self, user_id: str) -> str:
        """Set of the movie ids the history cap dropped from ``history``: with the history's
        own movies, every movie the user ever rated or watched (what ``exclude_seen`` leaves
        out). Empty, so absent, for a user within the cap."""
        return f"{self.prefix}:ud:{{{user_id}}}"

    def follows(self, user_id: str) -> str:
        """Hash followee id → ``f:<time>`` (followed then) or ``u:<time>`` (unfollowed then:
        kept so that an older event delivered late changes nothing)."""
        return f"{self.prefix}:uf:{{{user_id}}}"

    def followers(self, user_id: str) -> str:
        """Set of the ids of the users who follow this one (whose inboxes its events go to)."""
        return f"{self.prefix}:ufr:{{{user_id}}}"

    def social_inbox(self, user_id: str) -> str:
        """Sorted set ``followee|movie|rating|completion`` → time: what the people this user
        follows did (newest kept, capped)."""
        return f"{self.prefix}:usi:{{{user_id}}}"

    def meta(self, user_id: str) -> str:
        """Hash: rev (applied events), vector, vector_version, vector_rev, affinities."""
        return f"{self.prefix}:uv:{{{user_id}}}"

    def event_seen(self, event_id: str) -> str:
        """Dedupe key of one event id (earlier releases; no longer written)."""
        return f"{self.prefix}:ev:{event_id}"

    def recent_event_ids(self, user_id: str) -> str:
        """Sorted set of the user's most recently applied event ids (score: the rev each
        one made), capped: the window that drops a producer's resent duplicate."""
        return f"{self.prefix}:ue:{{{user_id}}}"

    def applied_offsets(self) -> str:
        """Hash ``topic:partition`` → offset of the last event applied in order from that
        partition (every event up to it is applied): where a worker that takes the
        partition over starts, and what a worker commits at most."""
        return f"{self.prefix}:applied"

    def catalog_movie(self, movie_id: str) -> str:
        return f"{self.prefix}:movie:{movie_id}"

    def catalog_index(self) -> str:
        """Set of movie ids that arrived through catalog events."""
        return f"{self.prefix}:movies"

    def event_log(self) -> str:
        """Redis stream: every applied event, once, for the trainer."""
        return f"{self.prefix}:eventlog"

    def user_updates(self) -> str:
        """Pub/sub channel announcing a user whose state changed."""
        return f"{self.prefix}:user-updated"

    def lag(self) -> str:
        """Hash ``topic:partition`` → consumer lag, as the stream workers last measured it
        (``_updated_at``: when); read by the API's admin endpoints and the operator page."""
        return f"{self.prefix}:lag"

    def active_users(self) -> str:
        """Sorted set user id → time of the user's latest applied event (seconds): the users
        whose vectors are refolded eagerly after a new model version is published."""
        return f"{self.prefix}:active"

    def state_built(self) -> str:
        """Hash written once every user's state was built from the durable history (by
        seeding or ``recsys state rebuild``): ``by``, ``at``, ``events``, ``users``. Missing
        while a model exists: the store was lost (e.g. Redis restarted empty) and is rebuilt."""
        return f"{self.prefix}:state"

    def rebuild_lock(self) -> str:
        """Taken by the one process that rebuilds the user state (expires unless renewed)."""
        return f"{self.prefix}:rebuild-lock"

    def refold_lock(self, version: int) -> str:
        """Taken by the one worker that refolds the active users for ``version``."""
        return f"{self.prefix}:refold:{version}"

    def served(self, user_id: str) -> str:
        """The movie ids of the user's last served top-10 (kept an hour), for live HR@10."""
        return f"{self.prefix}:us:{{{user_id}}}"

    def epoch(self) -> str:
        """A random id of this Redis data set, created by the first API that finds it
        missing (``SET NX``): a flush or a restart that comes back empty makes a new one, so
        state revisions (which then start again at 1) are only compared within one epoch."""
        return f"{self.prefix}:epoch"
