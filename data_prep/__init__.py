"""Preparation commands that turn the public SKINCON / Dermnet downloads and doctors' notes into the
training format (filter_cap.json + image/), webdataset shards, statistics, and a synthetic-sample
generator. Run them as `python -m data_prep.<command> ...` from the
repository root; see data_prep/README.md."""
