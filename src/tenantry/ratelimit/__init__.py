"""Rate limiting: GCRA limiters, their stores, and the policies that use them."""
