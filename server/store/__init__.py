"""Storage: InfluxDB, the panel's InfluxQL, the state store and its tables.

Importing the package registers every table on the state store's one ``Base``: the panel's
tables (``models``) build on ``state``, and ``state`` imports nothing above it.
"""

from namazu.server.store import leases as leases
from namazu.server.store import models as models
