"""Bundled assets: the sample clip (sample.mp4, Apache-2.0, see NOTICE and LICENSE)."""
