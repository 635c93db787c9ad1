"""Peer applications that Tenantry is compared with, each small enough to read in one sitting."""
