"""voip-rooms: a read replica of Rocket.Chat's GET /api/v1/voip/rooms, answered from memory."""

__version__ = "0.1.0"
