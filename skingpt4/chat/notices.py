"""Texts every chat front end shows (docs/inference.md, Privacy: the disclaimer is always visible)."""

DISCLAIMER = ("SkinGPT-4 is not a doctor. It is a research tool: its answers may be wrong and are no substitute "
              "for a qualified medical professional. Consult a doctor about any skin problem. In an emergency, "
              "call your local emergency number.")

# After the photo guideline of the paper's Supplementary Fig. S3.
PHOTO_GUIDELINE = """**Taking a good photo**
- **Light:** bright, even light (daylight is best); no flash glare, no strong shadows.
- **Distance:** about 10–30 cm, camera parallel to the skin; the lesion fills most of the picture.
- **Focus:** tap the lesion to focus; hold still; no filters or zoom blur.
- **One lesion per photo**, centred; move hair, clothing and jewellery out of the way."""
