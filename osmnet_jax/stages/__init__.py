"""Training stages (renderer, motion, expression, joint) as pure step libraries."""
