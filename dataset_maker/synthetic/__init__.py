"""The seven synthetic dataset makers (one file each) behind dataset_maker/make_synthetic.py."""
