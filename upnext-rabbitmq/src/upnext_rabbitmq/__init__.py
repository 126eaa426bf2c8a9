"""upnext's RabbitMQ backend: broker, result store and admin in `RabbitBroker`.

Found by upnext through the ``amqp`` and ``amqps`` entry points; build one
directly with ``RabbitBroker.from_url("amqp://guest:guest@localhost:5672/")``.
"""

from __future__ import annotations

from upnext_rabbitmq.broker import RabbitBroker

__all__ = ["RabbitBroker"]
