"""The data model (SQLAlchemy 2). Each table has exactly one writing service (DESIGN.md §2).

Money and prices are NUMERIC; constraints make bad rows impossible.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    Numeric,
    String,
    Text,
    UniqueConstraint,
    func,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

__all__ = [
    "ORDER_SIDES",
    "ORDER_STATUSES",
    "ORDER_TYPES",
    "Account",
    "Base",
    "Fill",
    "LeaderEpoch",
    "Order",
    "OutboxMessage",
    "Position",
    "RateLimitHit",
    "RiskAlert",
    "Symbol",
    "User",
    "WatchlistItem",
    "WebSession",
]

ORDER_SIDES = ("buy", "sell")
ORDER_TYPES = ("market", "limit")
ORDER_STATUSES = ("submitted", "open", "filled", "cancelled", "rejected")
ALERT_LEVELS = ("warn", "critical")

Money = Numeric(18, 2)
Price = Numeric(18, 4)
AvgCost = Numeric(28, 12)

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


def _now() -> Mapped[datetime]:
    return mapped_column(DateTime(timezone=True), server_default=func.now(), nullable=False)


class User(Base):
    __tablename__ = "users"
    __table_args__ = (CheckConstraint("length(username) BETWEEN 1 AND 64", name="username_len"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    display_name: Mapped[str] = mapped_column(String(128), default="")
    password_hash: Mapped[str] = mapped_column(Text)
    can_trade: Mapped[bool] = mapped_column(Boolean, default=False)
    last_login_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = _now()

    account: Mapped[Account] = relationship(back_populates="user", uselist=False)


class Account(Base):
    __tablename__ = "accounts"
    __table_args__ = (
        CheckConstraint("cash >= 0", name="cash_nonneg"),
        CheckConstraint("margin_limit >= 0", name="margin_limit_nonneg"),
        CheckConstraint("margin_used >= 0", name="margin_used_nonneg"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), unique=True)
    cash: Mapped[Decimal] = mapped_column(Money, default=Decimal(0))
    margin_limit: Mapped[Decimal] = mapped_column(Money, default=Decimal(0))
    margin_used: Mapped[Decimal] = mapped_column(Money, default=Decimal(0))
    updated_at: Mapped[datetime] = _now()

    user: Mapped[User] = relationship(back_populates="account")


class Symbol(Base):
    __tablename__ = "symbols"
    __table_args__ = (
        CheckConstraint("ticker ~ '^[A-Z][A-Z0-9.]{0,9}$'", name="ticker_format"),
        CheckConstraint("last > 0 AND bid > 0 AND ask > 0 AND prev_close > 0", name="prices_pos"),
        CheckConstraint("bid <= ask", name="bid_le_ask"),
        CheckConstraint("margin_rate > 0 AND margin_rate <= 1", name="margin_rate_range"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    ticker: Mapped[str] = mapped_column(String(10), unique=True)
    name: Mapped[str] = mapped_column(String(128))
    sector: Mapped[str] = mapped_column(String(64))
    last: Mapped[Decimal] = mapped_column(Price)
    bid: Mapped[Decimal] = mapped_column(Price)
    ask: Mapped[Decimal] = mapped_column(Price)
    prev_close: Mapped[Decimal] = mapped_column(Price)
    margin_rate: Mapped[Decimal] = mapped_column(Numeric(5, 4), default=Decimal("0.5"))
    updated_at: Mapped[datetime] = _now()


class Position(Base):
    __tablename__ = "positions"
    __table_args__ = (
        UniqueConstraint("account_id", "symbol_id", name="account_symbol"),
        CheckConstraint("quantity >= 0", name="quantity_nonneg"),
        CheckConstraint("avg_cost >= 0", name="avg_cost_nonneg"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    symbol_id: Mapped[int] = mapped_column(ForeignKey("symbols.id"), index=True)
    quantity: Mapped[int] = mapped_column(Integer, default=0)
    # the cost basis over the quantity, exact enough to give the basis back to the cent
    # (shared.domain.apply_fill)
    avg_cost: Mapped[Decimal] = mapped_column(AvgCost, default=Decimal(0))
    realised_pnl: Mapped[Decimal] = mapped_column(Money, default=Decimal(0))
    updated_at: Mapped[datetime] = _now()

    symbol: Mapped[Symbol] = relationship()


class WatchlistItem(Base):
    __tablename__ = "watchlist_items"
    __table_args__ = (
        UniqueConstraint("user_id", "symbol_id", name="user_symbol"),
        CheckConstraint("rank >= 0", name="rank_nonneg"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    symbol_id: Mapped[int] = mapped_column(ForeignKey("symbols.id"))
    rank: Mapped[int] = mapped_column(Integer)

    symbol: Mapped[Symbol] = relationship()


class Order(Base):
    __tablename__ = "orders"
    __table_args__ = (
        UniqueConstraint("account_id", "client_order_id", name="account_client_order"),
        CheckConstraint(_in("side", ORDER_SIDES), name="side_known"),
        CheckConstraint(_in("order_type", ORDER_TYPES), name="type_known"),
        CheckConstraint(_in("status", ORDER_STATUSES), name="status_known"),
        CheckConstraint("quantity BETWEEN 1 AND 10000", name="quantity_range"),
        CheckConstraint(
            "(order_type = 'limit' AND limit_price > 0)"
            " OR (order_type = 'market' AND limit_price IS NULL)",
            name="limit_price_matches_type",
        ),
        CheckConstraint("filled_qty >= 0 AND filled_qty <= quantity", name="filled_qty_range"),
        CheckConstraint(
            "(status = 'rejected') = (reject_reason IS NOT NULL)", name="reject_reason"
        ),
        CheckConstraint(
            "(status = 'filled') = (filled_qty = quantity)", name="filled_means_complete"
        ),
        Index("ix_orders_open_symbol", "symbol_id", postgresql_where="status = 'open'"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    client_order_id: Mapped[str] = mapped_column(String(64))
    symbol_id: Mapped[int] = mapped_column(ForeignKey("symbols.id"))
    side: Mapped[str] = mapped_column(String(4))
    order_type: Mapped[str] = mapped_column(String(6))
    quantity: Mapped[int] = mapped_column(Integer)
    limit_price: Mapped[Decimal | None] = mapped_column(Price)
    status: Mapped[str] = mapped_column(String(10))
    filled_qty: Mapped[int] = mapped_column(Integer, default=0)
    avg_fill_price: Mapped[Decimal | None] = mapped_column(Price)
    reject_reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = _now()
    updated_at: Mapped[datetime] = _now()

    symbol: Mapped[Symbol] = relationship()


class Fill(Base):
    __tablename__ = "fills"
    __table_args__ = (
        CheckConstraint("quantity > 0", name="quantity_pos"),
        CheckConstraint("price > 0", name="price_pos"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    order_id: Mapped[int] = mapped_column(ForeignKey("orders.id", ondelete="CASCADE"), index=True)
    quantity: Mapped[int] = mapped_column(Integer)
    price: Mapped[Decimal] = mapped_column(Price)
    created_at: Mapped[datetime] = _now()


class RiskAlert(Base):
    __tablename__ = "risk_alerts"
    __table_args__ = (
        CheckConstraint(_in("level", ALERT_LEVELS), name="level_known"),
        Index("ix_risk_alerts_account_created", "account_id", "created_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    level: Mapped[str] = mapped_column(String(8))
    text: Mapped[str] = mapped_column(Text)
    utilisation_pct: Mapped[Decimal] = mapped_column(Numeric(7, 2))
    created_at: Mapped[datetime] = _now()


class RateLimitHit(Base):
    """One accepted request in a rolling-window rate limit, keyed by user/component/event."""

    __tablename__ = "rate_limit_hits"
    __table_args__ = (Index("ix_rate_limit_hits_key_at", "key", "at"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    key: Mapped[str] = mapped_column(String(200))
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class OutboxMessage(Base):
    """A message committed with the change it announces, published by a relay afterwards
    (the transactional outbox: a crash or a NATS outage between commit and publish delays
    the message, never loses it)."""

    __tablename__ = "outbox"
    __table_args__ = (Index("ix_outbox_pending", "id", postgresql_where="published_at IS NULL"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    subject: Mapped[str] = mapped_column(String(200))
    payload: Mapped[dict[str, Any]] = mapped_column(JSONB)
    created_at: Mapped[datetime] = _now()
    published_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # the request that staged it: published in the message's X-Request-ID header
    request_id: Mapped[str | None] = mapped_column(String(64))


class WebSession(Base):
    """A browser login; the signed cookie carries its id, logout revokes it."""

    __tablename__ = "web_sessions"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = _now()
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class LeaderEpoch(Base):
    """The newest lease epoch that wrote for a single-leader role (e.g. the pricefeed).

    Every write transaction of a leader first claims its epoch here; a deposed leader's
    older epoch is refused, so its late writes change nothing (DESIGN.md §8).
    """

    __tablename__ = "leader_epochs"
    __table_args__ = (CheckConstraint("epoch >= 0", name="epoch_nonneg"),)

    role: Mapped[str] = mapped_column(String(64), primary_key=True)
    epoch: Mapped[int] = mapped_column(BigInteger)
    holder: Mapped[str] = mapped_column(String(200), default="")
    updated_at: Mapped[datetime] = _now()
