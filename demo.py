"""Local SkinGPT-4 chat in the browser. See docs/inference.md.

    python demo.py --cfg-path eval_configs/skingpt4_tiny.yaml
"""
import sys

from skingpt4.demo.launch import main

if __name__ == "__main__":
    sys.exit(main())
