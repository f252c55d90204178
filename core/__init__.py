"""What both halves of tokensim stand on: the learning side (``models``) and the wireless side (``sim``) may
import ``core``, and ``core`` imports neither (checked by ``lint-imports``, see ``.importlinter``)."""
