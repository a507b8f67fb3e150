"""Preparation commands that turn the public SKINCON / Dermnet downloads and doctors' notes into the
training format (filter_cap.json + image/), webdataset shards, statistics, and a synthetic-sample
generator. Run them as `python dataset/<command>.py ...` or `python -m dataset.<command> ...` from the
repository root; see dataset/README.md."""
