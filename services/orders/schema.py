"""The order form's payload: the seed's ``OrderSchema`` plus a client order id."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Any, Literal
from uuid import uuid4

from pydantic import BaseModel, Field, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError

__all__ = ["OrderSchema", "new_client_order_id"]


def new_client_order_id() -> str:
    """A fresh id for one rendered order form (32 hex characters)."""
    return uuid4().hex


class OrderSchema(BaseModel):
    """What an order submit must look like before anything touches the database.

    ``client_order_id`` is carried by every rendered form; a payload without one (an API
    caller, the seed's tests) gets a server-generated id, i.e. no de-duplication.
    """

    symbol: Annotated[str, Field(min_length=1, max_length=10)]
    side: Literal["buy", "sell"]
    quantity: Annotated[int, Field(gt=0, le=10_000)]
    order_type: Literal["market", "limit"] = "market"
    limit_price: Annotated[
        Decimal | None,
        Field(default=None, max_digits=18, decimal_places=4, validate_default=True),
    ]
    client_order_id: Annotated[
        str, Field(default_factory=new_client_order_id, min_length=1, max_length=64)
    ]
    # the ticket's confirmation of a large buy: the order's intent, as the ticket showed it
    confirm: Annotated[str, Field(default="", max_length=80)]

    @field_validator("symbol", mode="before")
    @classmethod
    def _normalise_symbol(cls, value: Any) -> Any:
        return value.strip().upper() if isinstance(value, str) else value

    @field_validator("side", mode="before")
    @classmethod
    def _side_is_chosen(cls, value: Any) -> Any:
        # Enter in the form submits its first button, which names no side: ask, never guess
        if value in (None, ""):
            raise PydanticCustomError("side", "Choose Buy or Sell: press one of the two buttons")
        return value

    @field_validator("quantity", mode="before")
    @classmethod
    def _whole_shares(cls, value: Any) -> Any:
        # a count of shares as typed: digits only ("1.0", "1_000", "+5", true are not one)
        if isinstance(value, bool) or (
            isinstance(value, str) and not (value.strip().isascii() and value.strip().isdigit())
        ):
            raise PydanticCustomError("quantity", "Enter a whole number of shares, e.g. 100")
        return value

    @field_validator("client_order_id", mode="before")
    @classmethod
    def _strip_id(cls, value: Any) -> Any:
        return value.strip() if isinstance(value, str) else value

    @field_validator("limit_price", mode="before")
    @classmethod
    def _blank_is_none(cls, value: Any) -> Any:
        if isinstance(value, str) and not value.strip():
            return None
        return value.strip() if isinstance(value, str) else value

    @field_validator("limit_price", mode="after")
    @classmethod
    def _limit_price_matches_type(cls, value: Decimal | None, info: ValidationInfo) -> Any:
        # A cross-field rule, kept on the field so the error is keyed "limit_price".
        order_type = info.data.get("order_type")
        if order_type == "limit":
            if value is None:
                raise PydanticCustomError("limit_price", "Enter a limit price for a limit order")
            if value <= 0:
                raise PydanticCustomError("limit_price", "Limit price must be greater than 0")
        elif order_type == "market" and value is not None:
            raise PydanticCustomError(
                "limit_price", "Leave the limit price empty for a market order"
            )
        return value
