from skingpt4.tiny.assets import main

main()
